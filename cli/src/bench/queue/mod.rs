//! `ringbus bench queue`: throughput and latency of a work queue, ringbus's queue (in
//! memory, and durable with each sync policy) beside a same-run `crossbeam` reference.
//!
//! Rows: transport x payload size (default 64 B and 1 KiB) x shape, 1→1 and 2→2
//! (producers→consumers). Transports ([`TRANSPORTS`]):
//!
//! * `crossbeam`: crossbeam-queue's `ArrayQueue` between threads of the parent process
//!   (the reference).
//! * `ringbus`: the library's queue in shared memory; `ringbus-durable-never`,
//!   `-batch` (`SyncPolicy::Batch(10 ms)`) and `-always`: the same queue kept in files
//!   of a fresh directory on disk (see [`DiskDir`]: never `/dev/shm` or another tmpfs),
//!   removed at the end of the run.
//!
//! All queues hold [`QUEUE_CAPACITY`] messages; ringbus queues are byte queues with
//! `max_message_size` = the payload size, `max_producers`/`max_consumers` = the shape's,
//! `Policy::Block(QUEUE_WAIT)` and the default prefetch.
//!
//! **Processes.** The ringbus rows run every producer and every consumer in its own
//! process: the parent spawns four long-lived `bench-peer` workers (the child of the
//! other patterns, driven with `queue open` / `queue run` lines, see [`worker`]) and
//! gives each a role per round. 1→1: producer = worker 0, consumer = worker 1. 2→2:
//! producers = workers 0 and 1, consumers = workers 2 and 3. Worker `w` is pinned to
//! allowed CPU `w mod n` (unless `--no-pin` or only one CPU): on this 2-CPU machine a
//! 1→1 round has its producer and consumer on different CPUs, and a 2→2 round puts one
//! producer and one consumer on each CPU. That is the fairest split of four busy roles
//! over two CPUs: neither CPU holds two roles waiting for the same thing, and a
//! producer blocked on a full queue leaves its CPU to a consumer and vice versa. The
//! `crossbeam` threads get the same roles on the same CPUs. Every consumer acks every
//! message it receives (the queue's cost; for `crossbeam` the pop is the ack).
//!
//! **Waits.** Each transport waits as it waits best. ringbus roles use the library's own
//! waits: a producer facing a full queue blocks in `send` (`Policy::Block`), a
//! consumer takes what is there with `try_receive` and, when nothing is, waits in
//! `receive_timeout` (both spin briefly, then sleep on a futex; the consumer's timeout is
//! 1 ms, so it looks at the stop counter now and then). `crossbeam` has no blocking calls:
//! its threads poll `push` / `pop`, busy for the first polls, then yielding the CPU
//! between polls ([`worker::Backoff`]: four roles on two CPUs must let each other run).
//! A consumer stops once every producer's stop message has been taken (a counter shared
//! by the round's consumers) and it finds nothing left for it (see [`worker::consume`]);
//! a count of messages per consumer cannot work, since consumers compete and claim
//! messages ahead (prefetch).
//!
//! **Rounds.** `--rounds` (default 7) rounds; each round visits every size, every shape,
//! and for each the selected transports in an order rotated by one place per round
//! (the VM's core-to-core latency flips between two modes every 10–60 s, and a round is
//! shifted by what ran just before it). A transport's turn is one streaming round, then
//! one latency round, so rows compared with each other are measured seconds apart at
//! most; the ratio of a row to its reference is the median over rounds of the two
//! same-round rates.
//!
//! * Streaming: each producer sends its share of [`STREAM_FACTOR`] `x --msgs` messages
//!   (500,000 in all by default; fewer above 1 KiB) as fast as the queue takes them, but stops after
//!   [`STREAM_MAX`] (durable `Always` syncs every message), then sends a stop message.
//!   msgs/s = data messages / (the last consumer's end − the first consumer's first
//!   message), `CLOCK_MONOTONIC`, reported as the median over rounds. Every round checks
//!   that the consumers acked exactly the messages the producers sent, each producer's
//!   messages in order, and (ringbus) that every delivery is a first one, in position
//!   order per consumer. A round that fails a check, or in which a role fails, leaves no
//!   figures and is reported on stderr; a row whose rounds fail [`MAX_FAILED_ROUNDS`]
//!   times is measured no further (its figures so far are kept).
//! * Latency, paced: each producer sends `--msgs` messages (at most for
//!   [`LATENCY_MAX`]), each stamped with `CLOCK_MONOTONIC` (system-wide on Linux) just
//!   before its send, and sends the next one only once a consumer has acked it (the
//!   consumer stores the sequence number in the producer's word in a small shared file
//!   after the ack; the producer polls it, yielding after a few polls). So the queue is
//!   empty or holds one message per producer when a message is sent, and the consumer
//!   has just returned to its wait (a ringbus consumer is then still spinning in
//!   `receive_timeout` unless the producer's send took longer than the spin, as a
//!   durable `Always` send does). A consumer reads the clock as soon as its receive
//!   returns; send→receive ns go into HDR histograms, merged over consumers and rounds:
//!   p50, p99, p99.9, max.

pub mod crossbeam;
pub mod ringbus;
pub mod worker;

use std::collections::HashSet;
use std::fmt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::peer::{self, Peer};
use super::stats::{self, LatencySummary, Row};
use super::transport::Mode;
use super::util::{allowed_cpus, err, Result, ShmFile};
use super::Options;
use ::ringbus::Node;
use worker::{AckWords, EndSpec, Outcome, Round, WorkerEnd, ACK_FILE_LEN, QUEUE_HEADER_BYTES};

/// Messages a queue holds (sent, not yet acked), for every transport.
pub const QUEUE_CAPACITY: usize = 1024;

/// Payload sizes when `--sizes` is not given.
pub const DEFAULT_SIZES: &[usize] = &[64, 1024];

/// Rounds when `--rounds` is not given.
pub const DEFAULT_ROUNDS: usize = 7;

/// Messages per streaming round (all producers, payloads up to 1 KiB) per `--msgs`: 1000 x
/// 500 makes 500,000, so that even the fastest rows stream for milliseconds (this VM's
/// hiccups are that long); the slower ones stop at [`STREAM_MAX`].
pub const STREAM_FACTOR: u64 = 1000;

/// Messages in all producers' streaming rounds for `msgs` and a payload size (fewer above
/// 1 KiB, at least 64).
fn stream_count(msgs: u64, payload: usize) -> u64 {
    (msgs * STREAM_FACTOR * 1024 / payload.max(1024) as u64).max(64)
}

/// A producer stops sending data in a streaming round after this long.
pub const STREAM_MAX: Duration = Duration::from_millis(150);

/// Rounds of one row that may fail before the row is measured no further.
pub const MAX_FAILED_ROUNDS: usize = 2;

/// A producer stops sending data in a latency round after this long.
pub const LATENCY_MAX: Duration = Duration::from_millis(60);

/// Names accepted by `--transports` for `queue`, in report order.
pub const TRANSPORTS: &[&str] = &[
    "crossbeam",
    "ringbus",
    "ringbus-durable-never",
    "ringbus-durable-batch",
    "ringbus-durable-always",
];

/// The shapes measured, in report order.
pub const SHAPES: [Shape; 2] = [
    Shape {
        producers: 1,
        consumers: 1,
    },
    Shape {
        producers: 2,
        consumers: 2,
    },
];

/// The figures the queue is judged on (1→1, 64 B): row, reference row, least ratio of
/// msgs/s.
pub const TARGETS: &[(&str, &str, f64)] = &[
    ("ringbus", "crossbeam", 0.5),
    ("ringbus-durable-never", "ringbus", 0.5),
    ("ringbus-durable-batch", "ringbus", 0.25),
];

/// Producers → consumers of a round. Every producer sends one stop message, and a
/// consumer stops at its first, so a round needs as many producers as consumers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Producers (processes, or threads for `crossbeam`).
    pub producers: usize,
    /// Consumers (processes, or threads for `crossbeam`).
    pub consumers: usize,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}→{}", self.producers, self.consumers)
    }
}

/// A worker's role in a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sends.
    Producer,
    /// Receives and acks.
    Consumer,
}

impl Role {
    /// Name in the peer protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "producer" => Ok(Role::Producer),
            "consumer" => Ok(Role::Consumer),
            _ => Err(err(format!("unknown role `{s}`"))),
        }
    }
}

/// Which worker plays a role, and where workers (and `crossbeam` threads) are pinned.
#[derive(Clone, Debug)]
pub struct CpuPlan {
    /// Allowed CPUs to pin to (empty: no pinning).
    cpus: Vec<usize>,
}

impl CpuPlan {
    /// Workers needed for every shape.
    pub fn workers() -> usize {
        SHAPES
            .iter()
            .map(|s| s.producers + s.consumers)
            .max()
            .unwrap_or(0)
    }

    /// The worker of producer or consumer `index` in `shape`: producers first.
    pub fn worker(shape: Shape, role: Role, index: usize) -> usize {
        match role {
            Role::Producer => index,
            Role::Consumer => shape.producers + index,
        }
    }

    /// CPU of worker `w`, if pinning.
    pub fn worker_cpu(&self, w: usize) -> Option<usize> {
        (!self.cpus.is_empty()).then(|| self.cpus[w % self.cpus.len()])
    }

    /// CPU of producer or consumer `index` in `shape`, if pinning.
    pub fn cpu(&self, shape: Shape, role: Role, index: usize) -> Option<usize> {
        self.worker_cpu(Self::worker(shape, role, index))
    }
}

/// Everything both sides need to find one queue: one per transport, size and shape.
#[derive(Clone, Debug)]
pub struct QueueSetup {
    /// Queue name (unique to the run, transport, size and shape).
    pub name: String,
    /// Payload bytes per message.
    pub payload: usize,
    /// Producers and consumers.
    pub shape: Shape,
    /// Durable transports: the queue's own directory on disk.
    pub dir: Option<PathBuf>,
}

/// A transport of `bench queue`.
pub trait QueueTransport: Send + Sync {
    /// Name on the command line and in the output.
    fn name(&self) -> &'static str;

    /// The row whose msgs/s this row's is divided by (same size and shape).
    fn reference(&self) -> Option<&'static str>;

    /// Threads of the parent ([`QueueTransport::local_round`]) instead of worker
    /// processes ([`QueueTransport::open_end`]).
    fn in_process(&self) -> bool {
        false
    }

    /// Whether the queue lives in files on disk (it gets [`QueueSetup::dir`]).
    fn durable(&self) -> bool {
        false
    }

    /// In-process transports: runs one whole round; one outcome per producer and consumer.
    fn local_round(
        &self,
        _setup: &QueueSetup,
        _round: &Round,
        _cpus: &CpuPlan,
    ) -> Result<Vec<Outcome>> {
        Err(err(format!("{} has no in-process rounds", self.name())))
    }

    /// Cross-process transports: opens a producer or consumer end in a worker process.
    fn open_end(&self, _spec: &EndSpec, _setup: &QueueSetup) -> Result<Box<dyn WorkerEnd>> {
        Err(err(format!("{} has no worker ends", self.name())))
    }
}

/// All queue transports of this build, in report order.
pub fn registry() -> Vec<Box<dyn QueueTransport>> {
    use ringbus::{RingbusQueue, Storage};
    vec![
        Box::new(crossbeam::Crossbeam),
        Box::new(RingbusQueue {
            storage: Storage::Memory,
        }),
        Box::new(RingbusQueue {
            storage: Storage::DurableNever,
        }),
        Box::new(RingbusQueue {
            storage: Storage::DurableBatch,
        }),
        Box::new(RingbusQueue {
            storage: Storage::DurableAlways,
        }),
    ]
}

/// The run's ack file (paced latency rounds): created by the parent, opened by workers.
pub fn ack_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}-queue-acks"))
}

/// Opens a worker end (in the worker process) for a `queue open` line.
pub fn open_end(
    transports: &[Box<dyn QueueTransport>],
    spec: &EndSpec,
    name: &str,
    dir: Option<PathBuf>,
) -> Result<Box<dyn WorkerEnd>> {
    let t = transports
        .iter()
        .find(|t| t.name() == spec.transport && !t.in_process())
        .ok_or_else(|| {
            err(format!(
                "transport `{}` has no worker ends in this build",
                spec.transport
            ))
        })?;
    t.open_end(
        spec,
        &QueueSetup {
            name: name.to_string(),
            payload: spec.payload,
            shape: spec.shape,
            dir,
        },
    )
}

/// A directory for the durable queues, on disk: `$RINGBUS_BENCH_DISK_DIR`, else the temp
/// directory, else the current directory, the first that is not a tmpfs or ramfs.
/// Removed (with every queue file in it) when dropped.
pub struct DiskDir {
    path: PathBuf,
    /// File system type, for the report.
    pub fs: String,
}

/// `statfs` magic numbers of file systems in memory.
const TMPFS_MAGIC: u64 = 0x0102_1994;
const RAMFS_MAGIC: u64 = 0x8584_58f6;

fn fs_name(magic: u64) -> String {
    match magic {
        0xef53 => "ext2/3/4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683e => "btrfs".into(),
        0x794c_7630 => "overlayfs".into(),
        0x2fc1_2fc1 => "zfs".into(),
        0x0102_1994 => "tmpfs".into(),
        m => format!("fs 0x{m:x}"),
    }
}

impl DiskDir {
    /// Creates `<base>/<key>-queue` in the first suitable base (see [`DiskDir`]); errors
    /// tell why none is.
    pub fn create(key: &str) -> Result<Self> {
        let mut bases = Vec::new();
        if let Some(d) = std::env::var_os("RINGBUS_BENCH_DISK_DIR") {
            bases.push(PathBuf::from(d));
        }
        bases.push(std::env::temp_dir());
        bases.push(std::env::current_dir()?);
        let mut rejected = Vec::new();
        for base in bases {
            let magic = match rustix::fs::statfs(&base) {
                Ok(st) => (st.f_type as u64) & 0xffff_ffff,
                Err(e) => {
                    rejected.push(format!("{}: {e}", base.display()));
                    continue;
                }
            };
            if magic == TMPFS_MAGIC || magic == RAMFS_MAGIC {
                rejected.push(format!("{} is in memory", base.display()));
                continue;
            }
            remove_stale(&base, "");
            let path = base.join(format!("{key}-queue"));
            let _ = std::fs::remove_dir_all(&path);
            // 0700, as the library wants the directories of its queues.
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&path)
                .map_err(|e| err(format!("cannot create {}: {e}", path.display())))?;
            return Ok(Self {
                path,
                fs: fs_name(magic),
            });
        }
        Err(err(format!(
            "no directory on disk for the durable queues ({}); set RINGBUS_BENCH_DISK_DIR",
            rejected.join("; ")
        )))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DiskDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes what runs whose process is gone left in `dir` (they were killed, or their
/// workers were): entries named `<prefix>rb-bench-<pid>-queue...`.
fn remove_stale(dir: &Path, prefix: &str) {
    let prefix = format!("{prefix}{}", peer::KEY_PREFIX);
    super::process::remove_stale(dir, &prefix, |rest| rest.split('-').next() == Some("queue"));
}

/// Everything measured for one row (transport, size, shape).
struct Cell<'a> {
    transport: &'a dyn QueueTransport,
    setup: QueueSetup,
    /// The transport could not be set up, or failed too many rounds.
    failed: bool,
    /// Rounds (streaming or latency) that failed.
    failed_rounds: usize,
    /// msgs/s of each streaming round (None: not run).
    rates: Vec<Option<f64>>,
    /// Every send→receive latency of all latency rounds.
    latency: Histogram<u64>,
}

/// Sums one round's outcomes: checks that the consumers took exactly what the producers
/// sent; returns the data messages, msgs/s (streaming) and merged latencies.
fn sum_round(outcomes: &[Outcome]) -> Result<(u64, Option<f64>, Histogram<u64>)> {
    let (mut sent, mut received) = (0, 0);
    let (mut first, mut last) = (u64::MAX, 0);
    let mut latency = stats::new_histogram();
    for o in outcomes {
        match o {
            Outcome::Produced { sent: s } => sent += s,
            Outcome::Consumed {
                count,
                first_ns,
                last_ns,
                latency: l,
            } => {
                received += count;
                if *count > 0 {
                    first = first.min(*first_ns);
                    last = last.max(*last_ns);
                }
                if let Some(l) = l {
                    latency
                        .add(l)
                        .map_err(|e| err(format!("merging latencies: {e}")))?;
                }
            }
        }
    }
    if sent != received {
        return Err(err(format!(
            "the consumers acked {received} data messages, the producers sent {sent}"
        )));
    }
    let rate =
        (received > 1 && last > first).then(|| (received - 1) as f64 * 1e9 / (last - first) as f64);
    Ok((received, rate, latency))
}

/// The parent's side of a run: workers, ack file, disk directory, notes.
struct Run<'a> {
    opts: &'a Options,
    cpus: CpuPlan,
    /// The ack file shared with the workers (when any transport runs in workers).
    acks: Option<ShmFile>,
    workers: Vec<Peer>,
    noted: HashSet<String>,
    next_seq: u64,
}

impl Run<'_> {
    fn note_once(&mut self, msg: String) {
        if self.noted.insert(msg.clone()) {
            super::note(&msg);
        }
    }

    /// Runs one round of `cell` (threads or worker processes). A cell that cannot be set
    /// up is marked failed ([`RoundResult::Unavailable`]); a round that fails (an error in a
    /// role, or the consumers not taking exactly what the producers sent) is
    /// [`RoundResult::Failed`], after every role has finished, so the next round starts
    /// clean. Errors are fatal only when the child protocol breaks.
    fn round(
        &mut self,
        cell: &mut Cell<'_>,
        mode: Mode,
        count: u64,
        max: Duration,
    ) -> Result<RoundResult> {
        let round = Round {
            mode,
            shape: cell.setup.shape,
            count,
            max,
            seq_base: self.next_seq,
        };
        self.next_seq += count + 2;
        let name = cell.transport.name();
        if cell.transport.in_process() {
            return Ok(
                match cell.transport.local_round(&cell.setup, &round, &self.cpus) {
                    Ok(outcomes) => summed(&outcomes),
                    Err(e) => RoundResult::Failed(e.to_string()),
                },
            );
        }
        let shape = cell.setup.shape;
        // Consumers first: they wait for messages, so every message has a taker.
        let specs: Vec<(EndSpec, usize)> = [
            (Role::Consumer, shape.consumers),
            (Role::Producer, shape.producers),
        ]
        .into_iter()
        .flat_map(|(role, n)| (0..n).map(move |index| (role, index)))
        .map(|(role, index)| {
            (
                EndSpec {
                    transport: name.to_string(),
                    payload: cell.setup.payload,
                    shape,
                    role,
                    index,
                },
                CpuPlan::worker(shape, role, index),
            )
        })
        .collect();
        // Opening an end that is open already is a no-op (a worker drops an end whose
        // round failed, and it is opened again here).
        for (spec, w) in &specs {
            let line = worker::open_line(spec, &cell.setup.name, cell.setup.dir.as_deref());
            if let Err(e) = self.workers[*w].queue_command(&line, "ok")? {
                self.note_once(format!(
                    "{name} {shape} {} B omitted: {} {}: {e}",
                    cell.setup.payload,
                    spec.role.as_str(),
                    spec.index
                ));
                cell.failed = true;
                return Ok(RoundResult::Unavailable);
            }
        }
        AckWords::of_file(
            self.acks
                .as_ref()
                .ok_or_else(|| err("no ack file for worker rounds"))?,
        )
        .reset_stops();
        let mut started = Vec::with_capacity(specs.len());
        let mut failures = Vec::new();
        for (spec, w) in &specs {
            let line = worker::run_line(spec, &round);
            match self.workers[*w].queue_command(&line, "ready")? {
                Ok(_) => started.push(*w),
                Err(e) => failures.push(e),
            }
        }
        let mut outcomes = Vec::with_capacity(specs.len());
        for w in started {
            match self.workers[w].queue_done()? {
                Ok(words) => outcomes.push(Outcome::parse(&words, mode)?),
                Err(e) => failures.push(e),
            }
        }
        Ok(if failures.is_empty() {
            summed(&outcomes)
        } else {
            RoundResult::Failed(failures.join("; "))
        })
    }
}

/// What became of one round.
enum RoundResult {
    /// Data messages, msgs/s (streaming) and latencies.
    Done(Option<f64>, Histogram<u64>),
    /// The transport cannot be set up for this cell.
    Unavailable,
    /// The round failed; why.
    Failed(String),
}

fn summed(outcomes: &[Outcome]) -> RoundResult {
    match sum_round(outcomes) {
        Ok((_, rate, latency)) => RoundResult::Done(rate, latency),
        Err(e) => RoundResult::Failed(e.to_string()),
    }
}

/// Runs `bench queue` and returns its rows (size by size, shape by shape, transports in
/// [`TRANSPORTS`] order).
pub fn run(opts: &Options) -> Result<Vec<Row>> {
    if let Some(&s) = opts.sizes.iter().find(|&&s| s < QUEUE_HEADER_BYTES) {
        return Err(err(format!(
            "queue: payload size {s} is smaller than the {QUEUE_HEADER_BYTES}-byte header"
        )));
    }
    let all = registry();
    let wanted = |name: &str| {
        opts.transports
            .as_ref()
            .map_or(true, |list| list.iter().any(|n| n == name))
    };
    for name in TRANSPORTS {
        if wanted(name) && !all.iter().any(|t| t.name() == *name) {
            super::note(&format!("{name} omitted: not in this build"));
        }
    }
    let selected: Vec<&dyn QueueTransport> = all
        .iter()
        .map(|t| &**t)
        .filter(|t| wanted(t.name()))
        .collect();
    let cpus = match (opts.pin, allowed_cpus()) {
        (true, cpus) if cpus.len() >= 2 => CpuPlan { cpus },
        (true, _) => {
            super::note("fewer than 2 CPUs available: not pinning");
            CpuPlan { cpus: Vec::new() }
        }
        (false, _) => CpuPlan { cpus: Vec::new() },
    };
    let key = format!("{}{}", peer::KEY_PREFIX, std::process::id());
    let dir = peer::run_dir()?;
    peer::remove_stale(&dir);
    // In-memory queues outlive their handles only when the workers were killed; the next
    // run removes them (queue segments and their lock files are named `queue_<name>`).
    if let Some(root) = Node::new().ok().as_ref().and_then(Node::root) {
        remove_stale(root, "queue_");
    }

    let disk = if selected.iter().any(|t| t.durable()) {
        match DiskDir::create(&key) {
            Ok(d) => {
                super::note(&format!(
                    "durable queues in {} ({})",
                    d.path().display(),
                    d.fs
                ));
                Some(d)
            }
            Err(e) => {
                super::note(&format!("durable rows omitted: {e}"));
                None
            }
        }
    } else {
        None
    };
    let selected: Vec<&dyn QueueTransport> = selected
        .into_iter()
        .filter(|t| !t.durable() || disk.is_some())
        .collect();

    let cross_process = selected.iter().any(|t| !t.in_process());
    // Created before the workers, which open it at their first round; removed when dropped.
    let acks = if cross_process {
        Some(ShmFile::create(&ack_path(&dir, &key), ACK_FILE_LEN)?)
    } else {
        None
    };
    let mut run = Run {
        opts,
        cpus,
        acks,
        workers: Vec::new(),
        noted: HashSet::new(),
        next_seq: 1,
    };
    if cross_process {
        for w in 0..CpuPlan::workers() {
            let cpu = run.cpus.worker_cpu(w);
            run.workers.push(Peer::spawn(&key, &dir, cpu)?);
        }
    }

    // One cell per (size, shape, transport), in report order.
    let mut cells: Vec<Cell<'_>> = Vec::new();
    for &payload in &opts.sizes {
        for shape in SHAPES {
            for &t in &selected {
                let name = format!(
                    "{key}-queue-{}-{payload}-{}x{}",
                    t.name(),
                    shape.producers,
                    shape.consumers
                );
                // The library creates the queue's directory (0700) when it opens the queue.
                let dir = match (&disk, t.durable()) {
                    (Some(d), true) => Some(d.path().join(&name)),
                    _ => None,
                };
                cells.push(Cell {
                    transport: t,
                    setup: QueueSetup {
                        name,
                        payload,
                        shape,
                        dir,
                    },
                    failed: false,
                    failed_rounds: 0,
                    rates: vec![None; opts.rounds],
                    latency: stats::new_histogram(),
                });
            }
        }
    }

    let per_group = selected.len().max(1);
    let t0 = std::time::Instant::now();
    let progress = super::progress::Progress::start(
        "ringbus bench: queue",
        (opts.rounds * cells.len()) as u64,
        "rows x rounds",
    );
    for r in 0..opts.rounds {
        for group in cells.chunks_mut(per_group) {
            let n = group.len();
            for i in 0..n {
                let cell = &mut group[(i + r) % n];
                run_cell_round(&mut run, cell, r)?;
                progress.inc(1);
            }
        }
    }
    drop(progress);
    eprintln!(
        "ringbus bench: {} queue rounds done in {:.1} s",
        opts.rounds,
        t0.elapsed().as_secs_f64()
    );
    for w in &mut run.workers {
        w.reset()?;
    }
    for w in run.workers.drain(..) {
        w.quit()?;
    }
    drop(disk);
    Ok(rows(&cells))
}

/// One streaming and one latency round of `cell` (round `r`). A failed round is
/// reported and leaves no figures; a cell that fails [`MAX_FAILED_ROUNDS`] rounds is
/// measured no further.
fn run_cell_round(run: &mut Run<'_>, cell: &mut Cell<'_>, r: usize) -> Result<()> {
    let (shape, payload) = (cell.setup.shape, cell.setup.payload);
    let per_producer = |total: u64| (total / shape.producers as u64).max(1);
    let phases = [
        (
            Mode::Stream,
            per_producer(stream_count(run.opts.msgs, payload)),
            STREAM_MAX,
        ),
        (
            Mode::Latency,
            super::latency_count(run.opts.msgs, payload),
            LATENCY_MAX,
        ),
    ];
    for (mode, count, max) in phases {
        if cell.failed {
            return Ok(());
        }
        match run.round(cell, mode, count, max)? {
            RoundResult::Done(rate, latency) => match mode {
                Mode::Stream => cell.rates[r] = rate,
                Mode::Latency => cell
                    .latency
                    .add(&latency)
                    .map_err(|e| err(format!("merging latencies: {e}")))?,
            },
            RoundResult::Unavailable => return Ok(()),
            RoundResult::Failed(why) => {
                cell.failed_rounds += 1;
                let what = format!(
                    "{} {shape} {payload} B: {mode} round {} failed",
                    cell.transport.name(),
                    r + 1
                );
                super::note(&format!("{what}: {why}"));
                if cell.failed_rounds >= MAX_FAILED_ROUNDS {
                    super::note(&format!(
                        "{} {shape} {payload} B: measured no further after {MAX_FAILED_ROUNDS} \
                         failed rounds",
                        cell.transport.name()
                    ));
                    cell.failed = true;
                }
            }
        }
    }
    Ok(())
}

/// The report rows: msgs/s medians, latency percentiles and same-round ratios.
fn rows(cells: &[Cell<'_>]) -> Vec<Row> {
    let find = |setup: &QueueSetup, name: &str| {
        cells.iter().find(|c| {
            c.transport.name() == name
                && c.setup.payload == setup.payload
                && c.setup.shape == setup.shape
        })
    };
    cells
        .iter()
        .filter(|c| c.rates.iter().any(Option::is_some) || !c.latency.is_empty())
        .map(|c| {
            let rate_ratio = c.transport.reference().and_then(|reference| {
                let base = find(&c.setup, reference)?;
                let ratios = c
                    .rates
                    .iter()
                    .zip(&base.rates)
                    .filter_map(|(mine, theirs)| match (mine, theirs) {
                        (Some(m), Some(t)) if *t > 0.0 => Some(m / t),
                        _ => None,
                    })
                    .collect();
                Some((stats::median(ratios)?, reference))
            });
            Row {
                transport: c.transport.name().to_string(),
                payload_bytes: c.setup.payload,
                touch: false,
                latency: LatencySummary::of(&c.latency, |ns| ns),
                msgs_per_s: stats::median(c.rates.iter().flatten().copied().collect()),
                ratio_p50_to_floor: None,
                pipelined_x_rtt: None,
                shape: Some((c.setup.shape.producers, c.setup.shape.consumers)),
                rate_ratio,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_share_cpus_fairly() {
        let plan = CpuPlan { cpus: vec![0, 1] };
        let one = SHAPES[0];
        let two = SHAPES[1];
        assert_eq!(CpuPlan::workers(), 4);
        assert_eq!(plan.cpu(one, Role::Producer, 0), Some(0));
        assert_eq!(plan.cpu(one, Role::Consumer, 0), Some(1));
        // 2→2: one producer and one consumer on each CPU.
        assert_eq!(plan.cpu(two, Role::Producer, 1), Some(1));
        assert_eq!(plan.cpu(two, Role::Consumer, 0), Some(0));
        assert_eq!(plan.cpu(two, Role::Consumer, 1), Some(1));
        assert_eq!(CpuPlan { cpus: vec![] }.cpu(two, Role::Consumer, 1), None);
        assert_eq!(two.to_string(), "2→2");
    }

    #[test]
    fn round_sums_check_counts() {
        let consumed = |count, first_ns, last_ns| Outcome::Consumed {
            count,
            first_ns,
            last_ns,
            latency: None,
        };
        let (n, rate, _) = sum_round(&[
            Outcome::Produced { sent: 600 },
            Outcome::Produced { sent: 401 },
            consumed(500, 1_000, 1_000_000),
            consumed(501, 2_000, 1_001_000),
        ])
        .unwrap();
        assert_eq!(n, 1001);
        assert!((rate.unwrap() - 1e6).abs() < 1.0, "{rate:?}");
        assert!(sum_round(&[Outcome::Produced { sent: 3 }, consumed(2, 0, 10)]).is_err());
    }

    #[test]
    fn crossbeam_rounds_run_both_shapes() {
        let plan = CpuPlan { cpus: Vec::new() };
        for payload in [64, 1024, 100] {
            for shape in SHAPES {
                let setup = QueueSetup {
                    name: "t".into(),
                    payload,
                    shape,
                    dir: None,
                };
                for (mode, count) in [(Mode::Stream, 5_000), (Mode::Latency, 50)] {
                    let round = Round {
                        mode,
                        shape,
                        count,
                        max: Duration::from_secs(5),
                        seq_base: 1,
                    };
                    let outcomes = crossbeam::Crossbeam
                        .local_round(&setup, &round, &plan)
                        .unwrap();
                    let (n, rate, hist) = sum_round(&outcomes).unwrap();
                    assert_eq!(n, count * shape.producers as u64);
                    assert!(rate.is_some());
                    assert_eq!(hist.len(), if mode == Mode::Latency { n } else { 0 });
                }
            }
        }
    }
}
