//! Mutation tests of every file format: corrupted, truncated, forged or replaced files must end
//! in a typed error or a correct result.
//!
//! Valid topic, service, queue (in-memory segment file) and durable-queue files (ring file and log
//! segment files) are made once by the public API under a private root. Each case copies them,
//! mutates the copy (bits flipped, words set to extremes, truncated, extended, words swapped, zeroed
//! or random ranges, pieces of other kinds' files spliced in, configurations reshaped consistently
//! with a matching file length, log headers and records forged with valid checksums, files deleted,
//! renamed, duplicated or replaced by directories, links and FIFOs), makes every participant
//! recorded in it alive (a live process), dead, or a mix, reads it as an observer would
//! (`ringbus::admin`: list, inspect, a dry-run clean, which must change no file), and then opens,
//! joins, sends, receives and recovers a little, with bounded waits. Every case must end in a typed error or a correct result:
//! a panic, a hang, a crash or a wrong result (a delivery of bytes never sent after a durable
//! recovery, a response that does not answer the request, a durable queue that no longer makes
//! progress after one corrupt record) is a failure. The test collects every failure and asserts
//! there are none; each is printed with the seed and case number that reproduce it.
//!
//! Running it:
//! - `cargo test --test mutation -- --nocapture`: `RINGBUS_MUTATION_CASES` cases per format
//!   (default: [`default_cases`], about 10-15 s per format in a debug build);
//! - `RINGBUS_MUTATION_CASES=100000 cargo test --release --test mutation -- --nocapture`: the full
//!   count (100,000 cases per format);
//! - `RINGBUS_MUTATION_SEED=<u64>`: another seed (default [`DEFAULT_SEED`]);
//! - `RINGBUS_MUTATION_FORMAT=durable RINGBUS_MUTATION_CASE=1234 cargo test --test mutation --
//!   --nocapture`: one case, in the test process, printing its mutations and how it ended (a panic
//!   prints its backtrace with `RUST_BACKTRACE=1`); `RINGBUS_MUTATION_FORMAT` alone runs one format;
//! - `RINGBUS_MUTATION_HANG_SECS`: the watchdog's limit per case (default 5 s in a debug build,
//!   3 s in a release build; a case that ends takes milliseconds, every wait in it is bounded by
//!   a few): a case over it that spent half of it on a CPU hangs (a spinning loop), as does any
//!   case over 4 times the limit (at least 8 s). Where a hung case is stuck is read with gdb, if
//!   there is one (for the first 25).
//!
//! Each format runs in a child process (this test binary, re-run), which reports every case on
//! stdout. A child that crashes (a signal: an out-of-bounds access that left the mapping) or that
//! its watchdog aborts (one case over the limit) is recorded as a failure of that case, and a new
//! child goes on from the next one. The summary (how every case ended: the typed error of the step
//! that stopped it, or ok) is written to stderr at the end of each format's test.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::fs::DirBuilder;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ringbus::{
    queue, topic, Bytes, Consumer, Node, OpenMode, Payload, ProcessId, QueueBuilder, ReceiveError,
    ServiceBuilder, SyncPolicy, TopicBuilder,
};

/// Cases per format by default: about 10-15 s each in a debug build, as CI runs them (a topic
/// case takes about 0.7 ms there, a service case 3 ms, a queue or durable queue case 2.5 ms).
fn default_cases(format: Format) -> u64 {
    match format {
        Format::Topic => 15_000,
        Format::Service => 4_000,
        Format::Queue => 5_000,
        Format::Durable => 5_000,
    }
}
/// The seed by default.
const DEFAULT_SEED: u64 = 0x6d75_7461_7469_6f6e;

const CASES_ENV: &str = "RINGBUS_MUTATION_CASES";
const SEED_ENV: &str = "RINGBUS_MUTATION_SEED";
const FORMAT_ENV: &str = "RINGBUS_MUTATION_FORMAT";
const CASE_ENV: &str = "RINGBUS_MUTATION_CASE";
const HANG_ENV: &str = "RINGBUS_MUTATION_HANG_SECS";
/// Set in a child process: the format it runs.
const CHILD_ENV: &str = "RINGBUS_MUTATION_CHILD";
const FROM_ENV: &str = "RINGBUS_MUTATION_FROM";
const TO_ENV: &str = "RINGBUS_MUTATION_TO";
const DESCRIBE_ENV: &str = "RINGBUS_MUTATION_DESCRIBE";
/// Set in a child once many cases hung: the watchdog no longer asks gdb where.
const NO_GDB_ENV: &str = "RINGBUS_MUTATION_NO_GDB";
/// Hangs looked at with gdb per format run (each costs a second or two).
const GDB_HANGS: usize = 25;

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[test]
fn mutated_topic_files() {
    run_format(Format::Topic);
}

#[test]
fn mutated_service_files() {
    run_format(Format::Service);
}

#[test]
fn mutated_queue_files() {
    run_format(Format::Queue);
}

#[test]
fn mutated_durable_queue_files() {
    run_format(Format::Durable);
}

/// The entry point of a child process (does nothing in a normal run).
#[test]
fn mutation_child() {
    let Ok(format) = std::env::var(CHILD_ENV) else {
        return;
    };
    let format = Format::parse(&format).expect("a format name");
    child_main(format);
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    Topic,
    Service,
    Queue,
    Durable,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Topic => "topic",
            Format::Service => "service",
            Format::Queue => "queue",
            Format::Durable => "durable",
        }
    }

    fn parse(s: &str) -> Option<Format> {
        [
            Format::Topic,
            Format::Service,
            Format::Queue,
            Format::Durable,
        ]
        .into_iter()
        .find(|f| f.name() == s)
    }

    fn index(self) -> u64 {
        self as u64
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim().replace('_', "");
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

fn seed() -> u64 {
    env_u64(SEED_ENV).unwrap_or(DEFAULT_SEED)
}

fn hang_limit() -> Duration {
    // A case that ends takes a few milliseconds (every wait in it is bounded by a few).
    // A corrupt lock word is given up on after `lock::HOLD_LIMIT` (1 s): bounded, not a hang.
    let default = if cfg!(debug_assertions) { 5 } else { 3 };
    Duration::from_secs(env_u64(HANG_ENV).unwrap_or(default))
}

// ---------------------------------------------------------------------------------------------
// Randomness: splitmix64 seeds an xorshift64* stream per case
// ---------------------------------------------------------------------------------------------

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

struct Rng(common::Rng);

impl Rng {
    fn for_case(seed: u64, format: Format, case: u64) -> Rng {
        let s = splitmix(splitmix(seed ^ format.index() << 56) ^ case);
        Rng(common::Rng(s | 1))
    }
    fn next(&mut self) -> u64 {
        self.0.next()
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo) as u64) as usize
    }
    /// True with probability `n / d`.
    fn chance(&mut self, n: u64, d: u64) -> bool {
        self.below(d) < n
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    /// An index chosen by weight.
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let mut x = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if x < u64::from(w) {
                return i;
            }
            x -= u64::from(w);
        }
        weights.len() - 1
    }
}

// ---------------------------------------------------------------------------------------------
// Shapes of the valid files (the builders used to make them and to open the mutated copies)
// ---------------------------------------------------------------------------------------------

const TOPIC: &str = "mt";
const SERVICE: &str = "ms";
const QUEUE: &str = "mq";
const DLQ: &str = "mqd";
const DURABLE: &str = "md";

/// A Pod payload bigger than a slot of a topic reshaped to a small maximum.
type TopicPod = [u64; 16];
/// A 4 KiB Pod payload: a loan of it past a slot shaped for less leaves the mapping.
type QueuePod = [u64; 512];

/// A request type whose name (`std::any::type_name`) is longer than the 128 bytes a header holds.
mod long_type_names_for_the_mutation_tests {
    #[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    pub struct ARequestTypeWhoseFullPathIsLongerThanTheOneHundredAndTwentyEightBytesOfTheHeader {
        pub words: [u32; 4],
    }
}
use long_type_names_for_the_mutation_tests::ARequestTypeWhoseFullPathIsLongerThanTheOneHundredAndTwentyEightBytesOfTheHeader as LongName;

#[derive(rkyv::Archive, rkyv::Serialize, Debug)]
struct Job {
    id: u64,
    name: String,
    tags: Vec<u32>,
}

const T_CAP: usize = 8;
const T_MAX: usize = 64;
const T_PUBS: usize = 4;
const T_SUBS: usize = 4;

fn topic_bytes(node: &Node) -> TopicBuilder<Bytes> {
    node.topic_bytes(TOPIC)
        .capacity(T_CAP)
        .max_message_size(T_MAX)
        .max_publishers(T_PUBS)
        .max_subscribers(T_SUBS)
        .max_held(2)
        .history(2)
        .policy(topic::Policy::DropOldest)
        .send_timeout(Duration::from_millis(2))
        .spin_before_sleep(Duration::ZERO)
}

fn topic_pod(node: &Node) -> TopicBuilder<TopicPod> {
    node.topic::<TopicPod>(TOPIC)
        .capacity(4)
        .max_publishers(2)
        .max_subscribers(3)
        .max_held(1)
        .policy(topic::Policy::Block)
        .send_timeout(Duration::from_millis(2))
        .spin_before_sleep(Duration::ZERO)
}

fn service_builder<Q: Payload + ?Sized, R: Payload + ?Sized>(
    node: &Node,
    clients: usize,
    in_flight: usize,
    depth: usize,
) -> ServiceBuilder<Q, R> {
    node.service::<Q, R>(SERVICE)
        .max_clients(clients)
        .max_servers(2)
        .max_in_flight(in_flight)
        .max_request_size(64)
        .max_response_size(64)
        .stream_depth(depth)
        .timeout(Duration::from_millis(3))
        .spin_before_sleep(Duration::ZERO)
}

fn service_bytes(node: &Node) -> ServiceBuilder<Bytes, u64> {
    service_builder(node, 4, 4, 2)
}

fn service_pod(node: &Node) -> ServiceBuilder<[u32; 4], [u32; 2]> {
    service_builder(node, 3, 2, 1)
}

fn service_long(node: &Node) -> ServiceBuilder<LongName, u64> {
    service_builder(node, 3, 2, 2)
}

fn queue_common<P: Payload + ?Sized>(b: QueueBuilder<P>, cap: usize) -> QueueBuilder<P> {
    b.capacity(cap)
        .max_producers(4)
        .max_consumers(4)
        .prefetch(2)
        .visibility_timeout(Duration::from_secs(60))
        .policy(queue::Policy::Fail)
        .spin_before_sleep(Duration::ZERO)
}

fn queue_bytes(node: &Node) -> QueueBuilder<Bytes> {
    queue_common(node.queue_bytes(QUEUE), 8)
        .max_message_size(64)
        .max_deliveries(3)
        .dead_letter(DLQ)
}

fn queue_pod(node: &Node) -> QueueBuilder<QueuePod> {
    queue_common(node.queue::<QueuePod>(QUEUE), 4)
}

fn queue_rkyv(node: &Node) -> QueueBuilder<ringbus::Rkyv<Job>> {
    queue_common(node.queue_rkyv::<Job>(QUEUE), 4).max_message_size(128)
}

const D_CAP: usize = 8;
const D_MAX: usize = 48;
const D_RECORDS: u64 = 4;

fn durable(node: &Node, dir: &Path) -> QueueBuilder<Bytes> {
    queue_common(node.queue_bytes(DURABLE), D_CAP)
        .max_message_size(D_MAX)
        .durable(dir)
        .segment_records(D_RECORDS)
        .sync_policy(SyncPolicy::Never)
}

/// The valid files a case starts from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    TopicBytes,
    TopicPod,
    ServiceBytes,
    ServicePod,
    ServiceLong,
    QueueBytes,
    QueuePod,
    QueueRkyv,
    /// Copied while its producer and consumers were registered (and holding deliveries).
    DurableCrashed,
    /// Copied after every handle left.
    DurableClean,
}

const KINDS: [Kind; 10] = [
    Kind::TopicBytes,
    Kind::TopicPod,
    Kind::ServiceBytes,
    Kind::ServicePod,
    Kind::ServiceLong,
    Kind::QueueBytes,
    Kind::QueuePod,
    Kind::QueueRkyv,
    Kind::DurableCrashed,
    Kind::DurableClean,
];

impl Kind {
    fn format(self) -> Format {
        match self {
            Kind::TopicBytes | Kind::TopicPod => Format::Topic,
            Kind::ServiceBytes | Kind::ServicePod | Kind::ServiceLong => Format::Service,
            Kind::QueueBytes | Kind::QueuePod | Kind::QueueRkyv => Format::Queue,
            Kind::DurableCrashed | Kind::DurableClean => Format::Durable,
        }
    }

    /// The segment (or ring) file.
    fn file(self) -> String {
        match self.format() {
            Format::Topic => format!("topic_{TOPIC}"),
            Format::Service => format!("service_{SERVICE}"),
            Format::Queue => format!("queue_{QUEUE}"),
            Format::Durable => format!("queue_{DURABLE}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Valid files and where their interesting bytes are
// ---------------------------------------------------------------------------------------------

/// Bytes of a file worth mutating more often: `start..end`, or with `step`, the first `width`
/// bytes of every `step` from `start`.
#[derive(Clone, Debug)]
struct Hot {
    label: &'static str,
    start: usize,
    end: usize,
    step: usize,
    width: usize,
    weight: u32,
}

fn hot(label: &'static str, start: usize, end: usize, weight: u32) -> Hot {
    Hot {
        label,
        start,
        end,
        step: 0,
        width: 0,
        weight,
    }
}

fn strided(
    label: &'static str,
    start: usize,
    end: usize,
    step: usize,
    width: usize,
    w: u32,
) -> Hot {
    Hot {
        label,
        start,
        end,
        step,
        width,
        weight: w,
    }
}

impl Hot {
    fn contains(&self, off: usize) -> bool {
        off >= self.start
            && off < self.end
            && (self.step == 0 || (off - self.start) % self.step < self.width)
    }
}

fn header_hot() -> Vec<Hot> {
    vec![
        hot("header", 0, 32, 12),
        hot("header type", 32, 184, 6),
        hot("header config", 184, 256, 16),
    ]
}

fn round(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

fn topic_hot(cap: usize, max: usize, pubs: usize, subs: usize) -> Vec<Hot> {
    let stride = round(32 + max, 64);
    let subs_table = 384 + 128 * pubs;
    let matrix = subs_table + 64 * subs;
    let rings = round(matrix + 128 * subs * pubs, 128);
    let end = rings + pubs * cap * stride;
    let mut h = header_hot();
    h.extend([
        hot("control", 256, 304, 12),
        strided("publisher entry", 384, subs_table, 128, 16, 8),
        strided("publisher ring", 448, subs_table, 128, 16, 8),
        strided("subscriber entry", subs_table, matrix, 64, 16, 6),
        strided("cursor", matrix, rings, 128, 24, 8),
        strided("slot header", rings, end, stride, 32, 10),
    ]);
    h
}

fn service_hot(
    clients: usize,
    servers: usize,
    in_flight: usize,
    req: usize,
    resp: usize,
    depth: usize,
) -> Vec<Hot> {
    use ringbus::layout::service as svc;
    let client_table = svc::client_table(servers).unwrap();
    let calls = svc::call_rings(servers, clients).unwrap();
    let ring = svc::ring_len(in_flight, req, resp, depth).unwrap();
    let mut h = header_hot();
    h.extend([
        hot("control", svc::CTRL, svc::CTRL_REQUEST_SEQ + 4, 10),
        strided(
            "server entry",
            svc::SERVER_TABLE,
            client_table,
            svc::SERVER_ENTRY,
            svc::ENTRY_HEADER,
            6,
        ),
        strided(
            "client entry",
            client_table,
            calls,
            svc::CLIENT_ENTRY,
            svc::CLIENT_WAKE + 4,
            8,
        ),
        strided(
            "client ring head/lock",
            client_table + svc::CLIENT_HEAD,
            calls,
            svc::CLIENT_ENTRY,
            svc::CLIENT_LOCK_WORD + 8 - svc::CLIENT_HEAD,
            8,
        ),
        // Claims, call slot and item headers all start lines of the rings.
        strided(
            "call ring line",
            calls,
            calls + clients * ring,
            svc::CACHE_LINE,
            svc::CALL_HEADER.max(svc::ITEM_HEADER),
            14,
        ),
    ]);
    h
}

fn queue_hot(cap: usize, stride: usize, producers: usize, consumers: usize) -> Vec<Hot> {
    use ringbus::layout::queue as q;
    let entry = q::ENTRY_LEN;
    let consumer_table = q::PRODUCER_TABLE + entry * producers;
    let slots = q::slots_offset(producers, consumers);
    let mut h = header_hot();
    h.extend([
        hot("tail/append", q::CTRL_TAIL, q::CTRL_APPEND + 8, 8),
        hot(
            "cursor/claim/head/returned",
            q::CTRL_CURSOR,
            q::CTRL_RETURNED + 8,
            10,
        ),
        hot("counters", q::CTRL_DEAD_LETTERED, q::CTRL_BOOT, 3),
        hot("boot", q::CTRL_BOOT, q::CTRL_BOOT + 8, 3),
        hot("waiters", q::CTRL_ROOM_WAITERS, q::CTRL_ROOM, 3),
        hot(
            "dead-letter name",
            q::CTRL_DLQ_LEN,
            q::CTRL_DLQ_NAME + q::DLQ_NAME_CAP,
            3,
        ),
        strided(
            "producer entry",
            q::PRODUCER_TABLE,
            consumer_table,
            entry,
            q::PRODUCER_WRITING + 8,
            8,
        ),
        strided(
            "consumer entry",
            consumer_table,
            slots,
            entry,
            q::ENTRY_OWNER + 8,
            6,
        ),
        strided(
            "slot header",
            slots,
            slots + cap * stride,
            stride,
            q::SLOT_HEADER,
            12,
        ),
    ]);
    h
}

fn log_hot(records: usize, stride: usize) -> Vec<Hot> {
    let end = 4096 + records * stride;
    vec![
        hot("log header", 0, 44, 24),
        hot("log header sync words", 64, 104, 8),
        strided("record header", 4096, end, stride, 16, 24),
        Hot {
            label: "record payload",
            start: 4096 + 16,
            end,
            step: stride,
            width: stride - 16,
            weight: 10,
        },
    ]
}

/// One file of a valid state.
#[derive(Clone)]
struct BaseFile {
    /// Path relative to the root (or durable directory).
    rel: String,
    bytes: Vec<u8>,
    hot: Vec<Hot>,
    /// A log segment file (else a segment or ring file).
    log: bool,
}

struct Base {
    kind: Kind,
    files: Vec<BaseFile>,
    /// What went wrong while making it with the public API (a failure of its own).
    trouble: Vec<String>,
}

fn base_msg(i: usize) -> Vec<u8> {
    let mut m = format!("base-{i:03}-").into_bytes();
    let len = 12 + (i * 13) % 36;
    while m.len() < len {
        m.push(b'a' + (i % 26) as u8);
    }
    m
}

/// Every regular file under `dir` except lock files, by path relative to `dir`.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file() && !p.to_string_lossy().ends_with(".lock") {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn make_base(kind: Kind, dir: &Path) -> Base {
    let _ = std::fs::remove_dir_all(dir);
    let node = Node::with_root(dir).unwrap();
    let mut trouble = Vec::new();
    let snap = |kind: Kind| -> Vec<BaseFile> {
        snapshot(dir)
            .into_iter()
            .map(|(rel, bytes)| {
                let log = rel.ends_with(".seg");
                let hot = if log {
                    log_hot(D_RECORDS as usize, round(16 + D_MAX, 16))
                } else {
                    match kind {
                        Kind::TopicBytes => topic_hot(T_CAP, T_MAX, T_PUBS, T_SUBS),
                        Kind::TopicPod => topic_hot(4, std::mem::size_of::<TopicPod>(), 2, 3),
                        Kind::ServiceBytes => service_hot(4, 2, 4, 64, 8, 2),
                        Kind::ServicePod => service_hot(3, 2, 2, 16, 8, 1),
                        Kind::ServiceLong => service_hot(3, 2, 2, 16, 8, 2),
                        Kind::QueueBytes => queue_hot(8, 128, 4, 4),
                        Kind::QueuePod => queue_hot(4, round(32 + 4096, 64), 4, 4),
                        Kind::QueueRkyv => queue_hot(4, 192, 4, 4),
                        Kind::DurableCrashed | Kind::DurableClean => queue_hot(D_CAP, 64, 4, 4),
                    }
                };
                BaseFile {
                    rel,
                    bytes,
                    hot,
                    log,
                }
            })
            .collect()
    };
    let files = match kind {
        Kind::TopicBytes => {
            let b = topic_bytes(&node);
            let s1 = b.subscriber().unwrap();
            let _s2 = b.subscriber().unwrap();
            let mut p1 = b.publisher().unwrap();
            let mut p2 = b.publisher().unwrap();
            for i in 0..11 {
                p1.send_copy(&base_msg(i)).unwrap();
            }
            for i in 11..13 {
                p2.send_copy(&base_msg(i)).unwrap();
            }
            let mut held = Vec::new();
            for _ in 0..4 {
                if let Ok(s) = s1.try_receive() {
                    if held.len() < 2 {
                        held.push(s);
                    }
                }
            }
            snap(kind)
        }
        Kind::TopicPod => {
            let b = topic_pod(&node);
            let s1 = b.subscriber().unwrap();
            let _s2 = b.subscriber().unwrap();
            let mut p = b.publisher().unwrap();
            for i in 0..3u64 {
                p.send_copy(&[i; 16]).unwrap();
            }
            let _held = s1.try_receive().unwrap();
            snap(kind)
        }
        Kind::ServiceBytes => {
            let b = service_bytes(&node);
            let server = b.server().unwrap();
            let c1 = b.client().unwrap();
            let c2 = b.client().unwrap();
            let p1 = c1.send(&base_msg(1)).unwrap();
            let _p2 = c1.send(&base_msg(2)).unwrap();
            let _p3 = c1.send(&base_msg(3)).unwrap();
            let _p4 = c2.send(&base_msg(4)).unwrap();
            let r1 = server.try_receive().unwrap();
            let v = common::checksum(&r1);
            r1.respond(&v).unwrap();
            let _r2 = server.try_receive().unwrap();
            let _resp = p1.wait_timeout(Duration::from_millis(100)).unwrap();
            snap(kind)
        }
        Kind::ServicePod => {
            let b = service_pod(&node);
            let server = b.server().unwrap();
            let c1 = b.client().unwrap();
            let p1 = c1.send(&[1, 2, 3, 4]).unwrap();
            let _p2 = c1.send(&[5, 6, 7, 8]).unwrap();
            let r1 = server.try_receive().unwrap();
            let v = answer_pod(&r1);
            r1.respond(&v).unwrap();
            let _r2 = server.try_receive().unwrap();
            let _resp = p1.wait_timeout(Duration::from_millis(100)).unwrap();
            snap(kind)
        }
        Kind::ServiceLong => {
            // Payload type names longer than the header's 128 bytes: a second handle may fail to
            // join; the file is kept as far as it got.
            let b = service_long(&node);
            let server = b
                .server()
                .map_err(|e| trouble.push(format!("server: {e:?}")));
            let client = b
                .client()
                .map_err(|e| trouble.push(format!("client: {e:?}")));
            let pending = client.as_ref().ok().and_then(|c| {
                c.send(&LongName {
                    words: [1, 2, 3, 4],
                })
                .ok()
            });
            let request = server.as_ref().ok().and_then(|s| s.try_receive().ok());
            let _kept = (pending, request);
            snap(kind)
        }
        Kind::QueueBytes => {
            let b = queue_bytes(&node);
            let mut p = b.producer().unwrap();
            let c1 = b.consumer().unwrap();
            let c2 = b.consumer().unwrap();
            for i in 0..6 {
                p.send(&base_msg(i)).unwrap();
            }
            let d1 = c1.try_receive().unwrap();
            let _d2 = c1.try_receive().unwrap();
            d1.ack().unwrap();
            c2.try_receive().unwrap().nack().unwrap();
            let _d3 = c2.try_receive().unwrap();
            snap(kind)
        }
        Kind::QueuePod => {
            let b = queue_pod(&node);
            let mut p = b.producer().unwrap();
            let c = b.consumer().unwrap();
            p.send(&[1; 512]).unwrap();
            p.send(&[2; 512]).unwrap();
            let _d = c.try_receive().unwrap();
            snap(kind)
        }
        Kind::QueueRkyv => {
            let b = queue_rkyv(&node);
            let mut p = b.producer().unwrap();
            let c = b.consumer().unwrap();
            for i in 0..3 {
                p.send(&job(i)).unwrap();
            }
            let _d = c.try_receive().unwrap();
            snap(kind)
        }
        Kind::DurableCrashed | Kind::DurableClean => {
            let b = durable(&node, dir);
            let crashed = {
                let mut p = b.producer().unwrap();
                let c1 = b.consumer().unwrap();
                let c2 = b.consumer().unwrap();
                for i in 0..8 {
                    p.send(&base_msg(i)).unwrap();
                }
                for _ in 0..6 {
                    c1.try_receive().unwrap().ack().unwrap();
                }
                for i in 8..12 {
                    p.send(&base_msg(i)).unwrap();
                }
                let _d1 = c1.try_receive().unwrap();
                let _d2 = c2.try_receive().unwrap();
                snap(kind)
            };
            if kind == Kind::DurableCrashed {
                crashed
            } else {
                snap(kind)
            }
        }
    };
    drop(node);
    let _ = std::fs::remove_dir_all(dir);
    assert!(!files.is_empty(), "{kind:?}: no files");
    Base {
        kind,
        files,
        trouble,
    }
}

/// Every message the durable bases sent.
fn durable_sent() -> HashSet<Vec<u8>> {
    (0..12).map(base_msg).collect()
}

fn job(i: u64) -> Job {
    Job {
        id: i,
        name: format!("job number {i}"),
        tags: (0..i as u32 % 5).collect(),
    }
}

fn answer_pod(r: &[u32; 4]) -> [u32; 2] {
    [
        r.iter().fold(0u32, |a, b| a.wrapping_add(*b)),
        r.iter().fold(0u32, |a, b| a ^ b),
    ]
}

// ---------------------------------------------------------------------------------------------
// Process identities written into the files
// ---------------------------------------------------------------------------------------------

/// Start time of `pid` (field 22 of /proc/<pid>/stat).
fn start_time(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 1..];
    rest.split_ascii_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap()
}

#[derive(Clone, Copy)]
struct Ids {
    /// This process: the owner recorded in the valid files.
    me: u64,
    /// A live process (the parent: the test harness, or whoever ran this one).
    peer: u64,
    /// A process that does not exist (a pid above the kernel's maximum).
    dead: u64,
}

impl Ids {
    fn new() -> Ids {
        let ppid = std::os::unix::process::parent_id();
        Ids {
            me: ProcessId::current().pack(),
            peer: ProcessId {
                pid: ppid,
                start: start_time(ppid),
            }
            .pack(),
            dead: ProcessId {
                pid: 0x0fff_fff1,
                start: 4242,
            }
            .pack(),
        }
    }
}

/// Whether the participants recorded in the files are alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Liveness {
    Alive,
    Dead,
    Mixed,
}

// ---------------------------------------------------------------------------------------------
// A case's files and their mutations
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Content {
    Bytes(Vec<u8>),
    Missing,
    Dir,
    /// A symbolic link to a file holding these bytes.
    Symlink(Vec<u8>),
    Fifo,
}

#[derive(Clone)]
struct CaseFile {
    rel: String,
    content: Content,
    hot: Vec<Hot>,
    log: bool,
}

impl CaseFile {
    fn bytes(&self) -> Option<&Vec<u8>> {
        match &self.content {
            Content::Bytes(b) => Some(b),
            _ => None,
        }
    }
    fn bytes_mut(&mut self) -> Option<&mut Vec<u8>> {
        match &mut self.content {
            Content::Bytes(b) => Some(b),
            _ => None,
        }
    }
    fn label(&self, off: usize) -> &'static str {
        self.hot
            .iter()
            .find(|h| h.contains(off))
            .map_or("body", |h| h.label)
    }
}

fn get_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn set_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn set_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// A case: what it starts from and what was done to it.
struct Case {
    kind: Kind,
    liveness: Liveness,
    files: Vec<CaseFile>,
    desc: Vec<String>,
    /// Only a log record's payload bytes were changed: a durable queue must recover and keep
    /// making progress (one corrupt record never stops it).
    payload_only: bool,
}

impl Case {
    fn describe(&self) -> String {
        format!(
            "base {:?}, participants {:?}: {}",
            self.kind,
            self.liveness,
            if self.desc.is_empty() {
                "no mutation".to_string()
            } else {
                self.desc.join("; ")
            }
        )
    }
}

struct Mutator<'a> {
    rng: &'a mut Rng,
    pool: &'a [BaseFile],
    ids: Ids,
}

const LEN_LIMIT: usize = 8 << 20;

impl Mutator<'_> {
    /// A file of the case to mutate (durable: the ring or a log file).
    fn pick_file(&mut self, files: &[CaseFile]) -> usize {
        let with_bytes: Vec<usize> = (0..files.len())
            .filter(|&i| files[i].bytes().is_some())
            .collect();
        if with_bytes.is_empty() {
            return 0;
        }
        let logs: Vec<usize> = with_bytes
            .iter()
            .copied()
            .filter(|&i| files[i].log)
            .collect();
        let rings: Vec<usize> = with_bytes
            .iter()
            .copied()
            .filter(|&i| !files[i].log)
            .collect();
        if !logs.is_empty() && (rings.is_empty() || self.rng.chance(1, 2)) {
            self.rng.pick(&logs)
        } else if !rings.is_empty() {
            self.rng.pick(&rings)
        } else {
            self.rng.pick(&with_bytes)
        }
    }

    /// An offset (aligned to `align`) for a field of `size` bytes, biased toward hot bytes.
    fn pick_off(&mut self, f: &CaseFile, align: usize, size: usize) -> Option<usize> {
        let len = f.bytes()?.len();
        if len < size {
            return None;
        }
        let mut weights: Vec<u32> = f.hot.iter().map(|h| h.weight).collect();
        weights.push(25); // anywhere
        let i = self.rng.weighted(&weights);
        let off = match f.hot.get(i) {
            Some(h) if h.step == 0 => self.rng.range(h.start, h.end.max(h.start + 1)),
            Some(h) => {
                let n = (h.end.saturating_sub(h.start)).div_ceil(h.step).max(1);
                h.start + self.rng.range(0, n) * h.step + self.rng.range(0, h.width.max(1))
            }
            None => self.rng.range(0, len),
        };
        let off = off / align * align;
        Some(off.min((len - size) / align * align))
    }

    fn interesting_u64(&mut self, old: u64, file_len: usize) -> u64 {
        let l = file_len as u64;
        let bit = 1u64 << self.rng.below(64);
        let random = self.rng.next();
        let choices = [
            0,
            1,
            2,
            3,
            4,
            7,
            8,
            63,
            64,
            65,
            127,
            128,
            255,
            256,
            4095,
            4096,
            4097,
            1 << 20,
            (1 << 20) + 1,
            1 << 24,
            (1 << 24) + 1,
            1 << 30,
            (1 << 30) + 1,
            1 << 31,
            u32::MAX as u64,
            1 << 32,
            (1 << 40) - 1,
            1 << 40,
            1 << 62,
            1 << 63,
            i64::MAX as u64,
            u64::MAX,
            u64::MAX - 1,
            l.wrapping_sub(1),
            l,
            l + 1,
            l + 8,
            l + 64,
            l * 2,
            old.wrapping_add(1),
            old.wrapping_sub(1),
            old.wrapping_add(8),
            old.wrapping_add(64),
            old ^ bit,
            old.wrapping_mul(2),
            old / 2,
            old | 1 << 63,
            self.ids.peer,
            self.ids.dead,
            self.ids.me,
            random,
        ];
        self.rng.pick(&choices)
    }

    fn interesting_u32(&mut self, old: u32) -> u32 {
        let bit = 1u32 << self.rng.below(32);
        self.rng.pick(&[
            0,
            1,
            2,
            3,
            4,
            5,
            7,
            255,
            256,
            4096,
            1 << 31,
            u32::MAX,
            u32::MAX - 1,
            old.wrapping_add(1),
            old.wrapping_sub(1),
            old ^ bit,
        ])
    }

    /// Applies one random mutation; returns its description, or None if it did not apply.
    fn mutate(&mut self, case: &mut Case) -> Option<String> {
        let durable = case.kind.format() == Format::Durable;
        // Kinds of mutation, by weight.
        let weights: [u32; 21] = [
            15,                          // 0 flip bits
            5,                           // 1 set a byte
            22,                          // 2 set a u64 to an interesting value
            8,                           // 3 set a u32
            6,                           // 4 swap two u64
            5,                           // 5 copy a range within the file
            5,                           // 6 zero a range
            3,                           // 7 random bytes over a range
            5,                           // 8 truncate
            4,                           // 9 extend
            7,                           // 10 splice a piece of another kind's file
            7,                           // 11 reshape the configuration consistently
            3,                           // 12 type identity fields
            1,                           // 13 replace the segment file by something else
            if durable { 4 } else { 0 }, // 14 forge a log header (valid crc)
            if durable { 2 } else { 0 }, // 15 forge a log record (valid crc)
            if durable { 4 } else { 0 }, // 16 delete / rename / duplicate a log file
            if durable { 1 } else { 0 }, // 17 foreign files in the log directory
            if durable { 1 } else { 0 }, // 18 the log directory replaced
            1,                           // 19 a lock file replaced
            if durable { 8 } else { 0 }, // 20 a byte of a written record's payload
        ];
        let what = self.rng.weighted(&weights);
        let fi = self.pick_file(&case.files);
        let f = &case.files[fi];
        let rel = f.rel.clone();
        let len = f.bytes().map_or(0, Vec::len);
        let was_payload_only = |f: &CaseFile, off: usize| f.log && f.label(off) == "record payload";
        match what {
            0 | 1 => {
                let off = self.pick_off(f, 1, 1)?;
                let label = f.label(off);
                let payload = was_payload_only(f, off);
                let b = case.files[fi].bytes_mut()?;
                let old = b[off];
                b[off] = if what == 0 {
                    let mut m = 1u8 << self.rng.below(8);
                    if self.rng.chance(1, 3) {
                        m |= 1 << self.rng.below(8);
                    }
                    old ^ m
                } else {
                    self.rng.next() as u8
                };
                if b[off] == old {
                    return None;
                }
                if !payload {
                    case.payload_only = false;
                }
                Some(format!(
                    "{rel} @{off:#x} ({label}): byte {old:#04x} -> {:#04x}",
                    b[off]
                ))
            }
            2 => {
                let off = self.pick_off(f, 8, 8)?;
                let label = f.label(off);
                let b = case.files[fi].bytes_mut()?;
                let old = get_u64(b, off);
                let v = self.interesting_u64(old, len);
                set_u64(b, off, v);
                case.payload_only = false;
                Some(format!("{rel} @{off:#x} ({label}): u64 {old:#x} -> {v:#x}"))
            }
            3 => {
                let off = self.pick_off(f, 4, 4)?;
                let label = f.label(off);
                let b = case.files[fi].bytes_mut()?;
                let old = get_u32(b, off);
                let v = self.interesting_u32(old);
                set_u32(b, off, v);
                case.payload_only = false;
                Some(format!("{rel} @{off:#x} ({label}): u32 {old:#x} -> {v:#x}"))
            }
            4 => {
                let a = self.pick_off(f, 8, 8)?;
                let c = self.pick_off(f, 8, 8)?;
                let (la, lc) = (f.label(a), f.label(c));
                let b = case.files[fi].bytes_mut()?;
                let (x, y) = (get_u64(b, a), get_u64(b, c));
                if x == y {
                    return None;
                }
                set_u64(b, a, y);
                set_u64(b, c, x);
                case.payload_only = false;
                Some(format!(
                    "{rel}: swap u64 @{a:#x} ({la}) {x:#x} and @{c:#x} ({lc}) {y:#x}"
                ))
            }
            5..=7 => {
                let n = self
                    .rng
                    .pick(&[8usize, 16, 32, 64, 128, 256, 1024])
                    .min(len);
                let dst = self.pick_off(f, 8, n.max(1))?;
                let label = f.label(dst);
                let src = if what == 5 {
                    Some(self.pick_off(f, 8, n.max(1))?)
                } else {
                    None
                };
                let mut rnd = vec![0u8; n];
                if what == 7 {
                    for x in rnd.iter_mut() {
                        *x = self.rng.next() as u8;
                    }
                }
                let b = case.files[fi].bytes_mut()?;
                match src {
                    Some(s) => b.copy_within(s..s + n, dst),
                    None => b[dst..dst + n].copy_from_slice(&rnd),
                }
                case.payload_only = false;
                Some(match (what, src) {
                    (5, Some(s)) => {
                        format!("{rel}: copy {n} bytes @{s:#x} over @{dst:#x} ({label})")
                    }
                    (6, _) => format!("{rel} @{dst:#x} ({label}): zero {n} bytes"),
                    _ => format!("{rel} @{dst:#x} ({label}): {n} random bytes"),
                })
            }
            8 => {
                let anywhere = self.rng.range(0, len.max(1));
                let to = self.rng.pick(&[
                    0,
                    1,
                    8,
                    255,
                    256,
                    257,
                    1024,
                    4095,
                    4096,
                    len.saturating_sub(1),
                    len.saturating_sub(8),
                    len.saturating_sub(64),
                    len / 2,
                    anywhere,
                ]);
                let to = to.min(len.saturating_sub(1));
                let b = case.files[fi].bytes_mut()?;
                b.truncate(to);
                case.payload_only = false;
                Some(format!("{rel}: truncate {len} -> {to} bytes"))
            }
            9 => {
                let any = self.rng.range(1, 9000);
                let add = self.rng.pick(&[1usize, 7, 8, 64, 4096, 4097, len, any]);
                let random = self.rng.chance(1, 3);
                let mut tail = vec![0u8; add];
                if random {
                    for x in tail.iter_mut() {
                        *x = self.rng.next() as u8;
                    }
                }
                let b = case.files[fi].bytes_mut()?;
                b.extend_from_slice(&tail);
                case.payload_only = false;
                Some(format!(
                    "{rel}: extend {len} -> {} bytes ({})",
                    len + add,
                    if random { "random" } else { "zeros" }
                ))
            }
            10 => {
                let pool = self.pool;
                let src = &pool[self.rng.below(pool.len() as u64) as usize];
                let s = &src.bytes;
                let mode = self.rng.below(4);
                let (from, to, n) = match mode {
                    // The other file's header (the first 256 bytes, or a log header's 104).
                    0 => (0, 0, if src.log { 104 } else { 256 }),
                    // Header and control block.
                    1 => (0, 0, 1024),
                    // The other file's body over ours, from the end of the header on.
                    2 => (256, 256, s.len().saturating_sub(256)),
                    // A random piece at a random place.
                    _ => {
                        let n = self.rng.pick(&[8usize, 64, 256, 1024]).min(s.len());
                        let from = self.rng.range(0, s.len() - n + 1) / 8 * 8;
                        let to = self.pick_off(f, 8, n)?;
                        (from, to, n)
                    }
                };
                let n = n.min(s.len().saturating_sub(from));
                if n == 0 {
                    return None;
                }
                let piece = s[from..from + n].to_vec();
                let b = case.files[fi].bytes_mut()?;
                if b.len() < to + n {
                    b.resize(to + n, 0);
                }
                b[to..to + n].copy_from_slice(&piece);
                case.payload_only = false;
                Some(format!(
                    "{rel}: splice {n} bytes of {} @{from:#x} over @{to:#x}",
                    src.rel
                ))
            }
            11 => {
                if f.log {
                    return None;
                }
                let r = self.reshape(case.kind.format(), case.files[fi].bytes_mut()?)?;
                case.payload_only = false;
                Some(format!("{rel}: {r}"))
            }
            12 => {
                if f.log || len < 256 {
                    return None;
                }
                let field = self.rng.below(5);
                let b = case.files[fi].bytes_mut()?;
                case.payload_only = false;
                match field {
                    0..=2 => {
                        let off = 32 + 8 * field as usize;
                        let old = get_u64(b, off);
                        let v = self.rng.pick(&[
                            0,
                            1,
                            2,
                            3,
                            8,
                            31,
                            32,
                            33,
                            64,
                            127,
                            128,
                            129,
                            200,
                            4096,
                            old.wrapping_add(1),
                            old.wrapping_mul(2),
                            u64::MAX,
                        ]);
                        set_u64(b, off, v);
                        let name =
                            ["type size", "type alignment", "type name length"][field as usize];
                        Some(format!("{rel} @{off:#x} ({name}): {old} -> {v}"))
                    }
                    3 => {
                        // Name bytes: invalid UTF-8, a multi-byte character cut at the end.
                        let at = 56 + self.rng.range(0, 128);
                        let v = self.rng.pick(&[0xffu8, 0xc3, 0xe2, 0x80, 0, b'X']);
                        b[at] = v;
                        Some(format!("{rel} @{at:#x} (type name): byte -> {v:#04x}"))
                    }
                    _ => {
                        // A name filling the whole field, ending in half a character.
                        for (i, x) in b[56..184].iter_mut().enumerate() {
                            *x = if i == 127 { 0xc3 } else { b'n' };
                        }
                        set_u64(b, 48, 128);
                        Some(format!(
                            "{rel} (type name): 128 bytes ending in half a UTF-8 character"
                        ))
                    }
                }
            }
            13 => {
                let seg = case.files.iter().position(|f| !f.log)?;
                let old = std::mem::replace(&mut case.files[seg].content, Content::Missing);
                let bytes = match old {
                    Content::Bytes(b) | Content::Symlink(b) => b,
                    _ => Vec::new(),
                };
                let (content, what) = match self.rng.below(5) {
                    0 => (Content::Missing, "missing"),
                    1 => (Content::Bytes(Vec::new()), "empty"),
                    2 => (Content::Dir, "a directory"),
                    3 => (Content::Symlink(bytes), "a symbolic link to its bytes"),
                    _ => (Content::Fifo, "a FIFO"),
                };
                case.files[seg].content = content;
                case.payload_only = false;
                Some(format!("{}: {what}", case.files[seg].rel))
            }
            14 => {
                if !f.log || len < 44 {
                    return None;
                }
                let b = case.files[fi].bytes_mut()?;
                let (off, size, name) = self.rng.pick(&[
                    (8usize, 4usize, "version"),
                    (12, 4, "header length"),
                    (16, 8, "base"),
                    (24, 8, "records"),
                    (32, 4, "stride"),
                    (36, 4, "max payload"),
                ]);
                let desc = if size == 8 {
                    let old = get_u64(b, off);
                    let v = self.rng.pick(&[
                        0,
                        1,
                        D_RECORDS,
                        D_RECORDS + 1,
                        D_RECORDS * 2,
                        D_RECORDS * 1000,
                        old.wrapping_add(D_RECORDS),
                        old.wrapping_add(1),
                        1 << 24,
                        (1 << 24) + 1,
                        u64::MAX - 3,
                        u64::MAX,
                    ]);
                    set_u64(b, off, v);
                    format!("{old} -> {v}")
                } else {
                    let old = get_u32(b, off);
                    let v = self.rng.pick(&[
                        0,
                        1,
                        2,
                        16,
                        48,
                        49,
                        64,
                        65,
                        4096,
                        1 << 26,
                        (1 << 26) + 1,
                        u32::MAX,
                        old.wrapping_add(16),
                    ]);
                    set_u32(b, off, v);
                    format!("{old} -> {v}")
                };
                let crc = crc32c::crc32c(&b[..40]);
                set_u32(b, 40, crc);
                case.payload_only = false;
                Some(format!("{rel} (log header {name}, crc recomputed): {desc}"))
            }
            15 => {
                if !f.log {
                    return None;
                }
                let stride = round(16 + D_MAX, 16);
                let k = self.rng.range(0, D_RECORDS as usize);
                let at = 4096 + k * stride;
                let b = case.files[fi].bytes_mut()?;
                if b.len() < at + stride {
                    return None;
                }
                let old = get_u32(b, at + 4);
                let v = self.rng.pick(&[
                    D_MAX as u32 + 1,
                    stride as u32,
                    4096,
                    1 << 26,
                    u32::MAX,
                    u32::MAX - 15,
                ]);
                set_u32(b, at + 4, v);
                let end = (at + 16 + v as usize).min(b.len());
                let crc = crc32c::crc32c(&b[at + 4..end]);
                set_u32(b, at, crc);
                case.payload_only = false;
                Some(format!(
                    "{rel} record {k} @{at:#x}: length {old} -> {v} (crc recomputed over what the file holds)"
                ))
            }
            16 => {
                let logs: Vec<usize> = (0..case.files.len())
                    .filter(|&i| case.files[i].log)
                    .collect();
                if logs.is_empty() {
                    return None;
                }
                let li = self.rng.pick(&logs);
                let old = case.files[li].rel.clone();
                let (dirname, name) = old.rsplit_once('/')?;
                let base: u64 = name.strip_suffix(".seg")?.parse().ok()?;
                let new_base = self.rng.pick(&[
                    base.wrapping_add(D_RECORDS),
                    base.wrapping_add(2 * D_RECORDS),
                    base.wrapping_sub(D_RECORDS),
                    base.wrapping_add(1),
                    base.wrapping_add(D_RECORDS * 1_000_000),
                    0,
                    (u64::MAX / D_RECORDS) * D_RECORDS,
                ]);
                let new_rel = format!("{dirname}/{new_base:020}.seg");
                let op = self.rng.below(3);
                case.payload_only = false;
                match op {
                    0 => {
                        case.files[li].content = Content::Missing;
                        Some(format!("{old}: deleted"))
                    }
                    _ if case.files.iter().any(|f| f.rel == new_rel) => None,
                    1 => {
                        case.files[li].rel = new_rel.clone();
                        Some(format!("{old}: renamed to {new_rel}"))
                    }
                    _ => {
                        let mut copy = case.files[li].clone();
                        copy.rel = new_rel.clone();
                        case.files.push(copy);
                        Some(format!("{old}: copied to {new_rel}"))
                    }
                }
            }
            17 => {
                let dir = format!("queue_{DURABLE}.log");
                let (name, bytes) = match self.rng.below(4) {
                    0 => ("notes.txt".to_string(), b"hello".to_vec()),
                    1 => (format!(".tmp-{:x}-0-0", self.ids.dead), vec![0u8; 100]),
                    2 => (format!(".tmp-{:x}-0-0", self.ids.peer), vec![0u8; 100]),
                    _ => (
                        format!("{:020}.seg", 99_999_999_999u64 * D_RECORDS),
                        Vec::new(),
                    ),
                };
                let rel = format!("{dir}/{name}");
                if case.files.iter().any(|f| f.rel == rel) {
                    return None;
                }
                case.files.push(CaseFile {
                    rel: rel.clone(),
                    content: Content::Bytes(bytes),
                    hot: Vec::new(),
                    log: false,
                });
                case.payload_only = false;
                Some(format!("{rel}: added"))
            }
            18 => {
                let dir = format!("queue_{DURABLE}.log");
                case.files.retain(|f| !f.log);
                let (content, what) = match self.rng.below(3) {
                    0 => (Content::Missing, "missing (every segment file gone)"),
                    1 => (
                        Content::Bytes(b"not a directory".to_vec()),
                        "a regular file",
                    ),
                    _ => (Content::Symlink(Vec::new()), "a symbolic link"),
                };
                case.files.push(CaseFile {
                    rel: dir.clone(),
                    content,
                    hot: Vec::new(),
                    log: false,
                });
                case.payload_only = false;
                Some(format!("{dir}: {what}"))
            }
            20 => {
                // A torn write or a disk error inside a record that was written (its length
                // and offset intact): recovery must find it by its checksum.
                if !f.log {
                    return None;
                }
                let stride = round(16 + D_MAX, 16);
                let b = case.files[fi].bytes_mut()?;
                let written: Vec<(usize, usize)> = (0..D_RECORDS as usize)
                    .map(|k| 4096 + k * stride)
                    .filter(|&at| at + stride <= b.len())
                    .map(|at| (at, get_u32(b, at + 4) as usize))
                    .filter(|&(_, len)| len > 0 && len <= D_MAX)
                    .collect();
                if written.is_empty() {
                    return None;
                }
                let (at, len) = written[self.rng.below(written.len() as u64) as usize];
                let off = at + 16 + self.rng.range(0, len);
                let old = b[off];
                b[off] ^= 1 << self.rng.below(8);
                Some(format!(
                    "{rel} @{off:#x} (record payload, {len} bytes written): byte {old:#04x} -> {:#04x}",
                    b[off]
                ))
            }
            _ => {
                let seg = case.files.iter().find(|f| !f.log)?.rel.clone();
                let rel = format!("{seg}.lock");
                if case.files.iter().any(|f| f.rel == rel) {
                    return None;
                }
                let (content, what) = match self.rng.below(3) {
                    0 => (Content::Dir, "a directory"),
                    1 => (Content::Symlink(Vec::new()), "a symbolic link"),
                    _ => (Content::Fifo, "a FIFO"),
                };
                case.files.push(CaseFile {
                    rel: rel.clone(),
                    content,
                    hot: Vec::new(),
                    log: false,
                });
                case.payload_only = false;
                Some(format!("{rel}: {what}"))
            }
        }
    }

    /// Sets one configuration word to another value and makes the header's segment length, and
    /// the file's, match the new layout: a header that is internally consistent.
    fn reshape(&mut self, format: Format, b: &mut Vec<u8>) -> Option<String> {
        if b.len() < 256 {
            return None;
        }
        let mut c: [u64; 9] = std::array::from_fn(|i| get_u64(b, 184 + 8 * i));
        let words: &[(usize, &str)] = match format {
            Format::Topic => &[
                (1, "capacity"),
                (2, "max message size"),
                (3, "max publishers"),
                (4, "max subscribers"),
                (5, "max held"),
                (6, "history"),
            ],
            Format::Service => {
                use ringbus::layout::service as svc;
                &[
                    (svc::CONFIG_MAX_CLIENTS, "max clients"),
                    (svc::CONFIG_MAX_SERVERS, "max servers"),
                    (svc::CONFIG_IN_FLIGHT, "in flight"),
                    (svc::CONFIG_MAX_REQUEST, "max request"),
                    (svc::CONFIG_MAX_RESPONSE, "max response"),
                    (svc::CONFIG_DEPTH, "stream depth"),
                ]
            }
            Format::Queue => &[
                (0, "capacity"),
                (2, "max message size"),
                (3, "max producers"),
                (4, "max consumers"),
                (6, "max deliveries"),
                (7, "visibility ms"),
            ],
            Format::Durable => &[
                (0, "capacity"),
                (2, "max message size"),
                (3, "max producers"),
                (4, "max consumers"),
                (8, "log records per segment"),
            ],
        };
        let (w, name) = self.rng.pick(words);
        let old = c[w];
        let v = self.rng.pick(&[
            0,
            1,
            2,
            3,
            4,
            8,
            16,
            32,
            63,
            64,
            65,
            128,
            4096,
            4097,
            1 << 20,
            1 << 24,
            old.wrapping_mul(2),
            old / 2,
            old.wrapping_add(1),
            old.saturating_sub(1),
        ]);
        if v == old {
            return None;
        }
        c[w] = v;
        let small = |x: u64| usize::try_from(x).ok();
        let len = match format {
            Format::Topic => {
                let (cap, max, p, s) = (small(c[1])?, small(c[2])?, small(c[3])?, small(c[4])?);
                let stride = round(32usize.checked_add(max)?, 64);
                let rings = round(
                    384 + 128 * p.min(1 << 16)
                        + 64 * s.min(1 << 16)
                        + 128 * s.min(1 << 16) * p.min(1 << 16),
                    128,
                );
                rings.checked_add(p.checked_mul(cap)?.checked_mul(stride)?)?
            }
            Format::Service => {
                use ringbus::layout::service as svc;
                svc::segment_len(
                    small(c[svc::CONFIG_MAX_CLIENTS])?,
                    small(c[svc::CONFIG_MAX_SERVERS])?,
                    small(c[svc::CONFIG_IN_FLIGHT])?,
                    small(c[svc::CONFIG_MAX_REQUEST])?,
                    small(c[svc::CONFIG_MAX_RESPONSE])?,
                    small(c[svc::CONFIG_DEPTH])?,
                )?
            }
            Format::Queue | Format::Durable => {
                let (cap, max, p, cs) = (small(c[0])?, small(c[2])?, small(c[3])?, small(c[4])?);
                let stride = if c[5] & 1 != 0 {
                    64
                } else {
                    round(32usize.checked_add(max)?, 64)
                };
                c[1] = stride as u64;
                let slots = round(1024 + 64 * (p.min(1 << 16) + cs.min(1 << 16)), 128);
                slots.checked_add(cap.checked_mul(stride)?)?
            }
        };
        if !(256..=LEN_LIMIT).contains(&len) {
            return None;
        }
        for (i, x) in c.iter().enumerate() {
            set_u64(b, 184 + 8 * i, *x);
        }
        set_u64(b, 24, len as u64);
        let was = b.len();
        b.resize(len, 0);
        Some(format!(
            "reshape: config word {w} ({name}) {old} -> {v}, segment length {was} -> {len}"
        ))
    }
}

/// Builds case `n` of `format`: its base, liveness and mutations.
fn build_case(
    bases: &[Base],
    pool: &[BaseFile],
    ids: Ids,
    seed: u64,
    format: Format,
    n: u64,
) -> (Case, Rng) {
    let mut rng = Rng::for_case(seed, format, n);
    let mine: Vec<&Base> = bases.iter().filter(|b| b.kind.format() == format).collect();
    let base = mine[rng.below(mine.len() as u64) as usize];
    // In-memory segments whose participants all died are replaced: most of their mutations
    // matter only with someone alive.
    let weights = if format == Format::Durable {
        [35, 45, 20]
    } else {
        [45, 30, 25]
    };
    let liveness = match rng.weighted(&weights) {
        0 => Liveness::Alive,
        1 => Liveness::Dead,
        _ => Liveness::Mixed,
    };
    let mut files: Vec<CaseFile> = base
        .files
        .iter()
        .map(|f| CaseFile {
            rel: f.rel.clone(),
            content: Content::Bytes(f.bytes.clone()),
            hot: f.hot.clone(),
            log: f.log,
        })
        .collect();
    // The participants the files record (this process made them) become live or dead ones.
    for f in files.iter_mut() {
        let Some(b) = f.bytes_mut() else { continue };
        for off in (0..b.len().saturating_sub(7)).step_by(8) {
            if get_u64(b, off) == ids.me {
                let alive = match liveness {
                    Liveness::Alive => true,
                    Liveness::Dead => false,
                    Liveness::Mixed => rng.chance(1, 2),
                };
                set_u64(b, off, if alive { ids.peer } else { ids.dead });
            }
        }
    }
    let mut case = Case {
        kind: base.kind,
        liveness,
        files,
        desc: Vec::new(),
        payload_only: true,
    };
    // A few controls (no mutation) keep the unmutated files honest.
    let count = match rng.weighted(&[2, 60, 24, 10, 4]) {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 3,
        _ => 6,
    };
    let mut m = Mutator {
        rng: &mut rng,
        pool,
        ids,
    };
    let mut tries = 0;
    while case.desc.len() < count && tries < 50 {
        tries += 1;
        if let Some(d) = m.mutate(&mut case) {
            case.desc.push(d);
        }
    }
    if case.desc.is_empty() {
        case.payload_only = false;
    }
    (case, rng)
}

/// Writes the case's files under `dir` (best effort: a file a mutation made impossible, such as
/// one inside a log directory that is now a regular file, is left out).
fn materialize(dir: &Path, case: &Case) {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .unwrap();
    for f in &case.files {
        let path = dir.join(&f.rel);
        if let Some(parent) = path.parent() {
            let _ = DirBuilder::new().recursive(true).mode(0o700).create(parent);
        }
        let _ = match &f.content {
            Content::Bytes(b) => std::fs::write(&path, b),
            Content::Missing => Ok(()),
            Content::Dir => std::fs::create_dir(&path),
            Content::Symlink(b) => {
                let target = dir.join(format!("{}.target", f.rel.replace('/', "_")));
                std::fs::write(&target, b).and_then(|()| std::os::unix::fs::symlink(&target, &path))
            }
            Content::Fifo => rustix::fs::mknodat(
                rustix::fs::CWD,
                &path,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )
            .map_err(Into::into),
        };
    }
}

// ---------------------------------------------------------------------------------------------
// Running a case: open, join, send, receive, recover
// ---------------------------------------------------------------------------------------------

/// What a case did: every operation's result, and any wrong result.
#[derive(Default)]
struct Run {
    ops: Vec<String>,
    wrong: Vec<String>,
    /// When each operation was recorded (for the verbose single-case mode).
    at: Vec<Instant>,
}

/// The variant of an error (`Corrupt("…")` → `Corrupt`).
fn variant<E: Debug>(e: &E) -> String {
    let s = format!("{e:?}");
    let end = s.find(['(', ' ', '{']).unwrap_or(s.len());
    s[..end].to_string()
}

impl Run {
    fn op<T, E: Debug>(&mut self, what: &str, r: &Result<T, E>) {
        self.at.push(Instant::now());
        self.ops.push(match r {
            Ok(_) => format!("{what}:Ok"),
            Err(e) => format!("{what}:{}", variant(e)),
        });
    }
    fn wrong(&mut self, why: String) {
        self.wrong.push(why);
    }
}

fn opened<E: Debug>(what: &str) -> impl Fn(E) -> String + '_ {
    move |e| format!("{what}: {}", variant(&e))
}

fn open_mode(rng: &mut Rng) -> OpenMode {
    match rng.weighted(&[70, 25, 5]) {
        0 => OpenMode::OpenOrCreate,
        1 => OpenMode::OpenExisting,
        _ => OpenMode::CreateNew,
    }
}

fn inode(p: &Path) -> Option<u64> {
    std::fs::symlink_metadata(p).ok().map(|m| m.ino())
}

/// How the segment file changed across the opens: "joined", "replaced" or "created".
fn fate(before: Option<u64>, after: Option<u64>) -> &'static str {
    match (before, after) {
        (Some(a), Some(b)) if a == b => "ok (joined)",
        (Some(_), _) => "ok (replaced)",
        (None, _) => "ok (created)",
    }
}

/// A message length: mostly within `max`, sometimes exactly it, one past it, or far past it.
fn msg_len(rng: &mut Rng, max: usize) -> usize {
    // A mutated shape may allow huge messages: lengths stay small but for the edges.
    let m = max.min(4096);
    match rng.weighted(&[70, 8, 8, 6, 8]) {
        0 => rng.range(1, m + 1),
        1 => 0,
        2 => max,
        3 => max.saturating_add(1),
        _ => rng.range(m + 1, 4 * m + 300),
    }
}

fn case_msg(case: u64, i: usize, len: usize) -> Vec<u8> {
    let mut m = format!("case-{case}-{i}-").into_bytes();
    m.extend((m.len()..len).map(|k| b'A' + (k % 26) as u8));
    m.truncate(len);
    m
}

fn run_topic_bytes(dir: &Path, n: u64, rng: &mut Rng, run: &mut Run) -> Result<String, String> {
    let node = Node::with_root(dir).map_err(opened("node"))?;
    let b = topic_bytes(&node).open_mode(open_mode(rng));
    let seg = dir.join(Kind::TopicBytes.file());
    let before = inode(&seg);
    let sub = b.subscriber().map_err(opened("subscriber"))?;
    let after = inode(&seg);
    let mut publ = b.publisher().map_err(opened("publisher"))?;
    let max = publ.max_message_size();
    for i in 0..3 {
        let len = msg_len(rng, max);
        let r = publ.send_copy(&case_msg(n, i, len));
        if len > max && r.is_ok() {
            run.wrong(format!(
                "a send of {len} bytes over the maximum of {max} succeeded"
            ));
        }
        run.op("send", &r);
    }
    let len = msg_len(rng, max);
    let r = publ.try_loan(len);
    run.op("loan", &r);
    if let Ok(mut loan) = r.map_err(drop) {
        let bytes = loan.bytes_mut();
        if bytes.len() != len {
            run.wrong(format!("a loan of {len} bytes has {}", bytes.len()));
        }
        bytes.fill(0x5a);
        loan.send();
    }
    let mut held = Vec::new();
    for _ in 0..12 {
        let r = if rng.chance(1, 8) {
            sub.receive_timeout(Duration::from_millis(1))
        } else {
            sub.try_receive()
        };
        run.op("receive", &r);
        match r {
            Ok(s) => {
                if s.len() > max {
                    run.wrong(format!("a sample of {} bytes, maximum {max}", s.len()));
                }
                let _ = s.iter().fold(0u8, |a, b| a ^ b);
                if held.is_empty() && rng.chance(1, 2) {
                    held.push(s);
                }
            }
            Err(ReceiveError::Empty | ReceiveError::Timeout(_)) => break,
            Err(ReceiveError::TooManyHeld(_)) => held.clear(),
            Err(_) => {}
        }
    }
    drop(held);
    // The publisher leaves and another takes a ring (resuming it); a late subscriber joins
    // (with history) while the first one still holds its cursors.
    drop(publ);
    let r = b.publisher();
    run.op("join publisher", &r);
    if let Ok(mut publ) = r {
        run.op("send", &publ.send_copy(&case_msg(n, 9, 8)));
    }
    let r = b.subscriber();
    run.op("join subscriber", &r);
    for s in [Some(&sub), r.as_ref().ok()].into_iter().flatten() {
        for _ in 0..4 {
            let r = s.try_receive();
            run.op("receive", &r);
            match r {
                Ok(s) if s.len() > max => {
                    run.wrong(format!("a sample of {} bytes, maximum {max}", s.len()))
                }
                Err(ReceiveError::Empty) => break,
                _ => {}
            }
        }
        let _ = s.missed();
    }
    Ok(fate(before, after).to_string())
}

fn run_topic_pod(dir: &Path, rng: &mut Rng, run: &mut Run) -> Result<String, String> {
    let node = Node::with_root(dir).map_err(opened("node"))?;
    let b = topic_pod(&node).open_mode(open_mode(rng));
    let seg = dir.join(Kind::TopicPod.file());
    let before = inode(&seg);
    let sub = b.subscriber().map_err(opened("subscriber"))?;
    let after = inode(&seg);
    let mut publ = b.publisher().map_err(opened("publisher"))?;
    let max = publ.max_message_size();
    let size = std::mem::size_of::<TopicPod>();
    for i in 0..2u64 {
        let r = publ.send_copy(&[i + 100; 16]);
        run.op("send", &r);
        let sent = r.is_ok();
        let r = publ.try_loan();
        run.op("loan", &r);
        if (sent || r.is_ok()) && size > max {
            run.wrong(format!(
                "a {size}-byte Pod was taken by a topic whose maximum message size is {max}"
            ));
        }
        if let Ok(mut loan) = r {
            *loan = [i + 200; 16];
            loan.send();
        }
    }
    let mut held = Vec::new();
    for _ in 0..8 {
        let r = sub.try_receive();
        run.op("receive", &r);
        match r {
            Ok(s) => {
                let _ = s.iter().fold(0u64, |a, b| a ^ b);
                if held.is_empty() && rng.chance(1, 2) {
                    held.push(s);
                }
            }
            Err(ReceiveError::Empty) => break,
            Err(ReceiveError::TooManyHeld(_)) => held.clear(),
            Err(_) => {}
        }
    }
    Ok(fate(before, after).to_string())
}

/// A server and a client: the client calls, the server answers every call it finds (the client's
/// and those the file holds), and the client's response must answer its own request.
#[allow(clippy::too_many_arguments)]
fn run_service<Q: Payload + ?Sized, R: Payload + ?Sized>(
    b: ServiceBuilder<Q, R>,
    dir: &Path,
    rng: &mut Rng,
    run: &mut Run,
    (request, request_len, response_len): (&Q::Input, usize, usize),
    loan: LoanCall<Q, R>,
    respond: impl Fn(ringbus::Request<'_, Q, R>) -> Result<(), ringbus::SendError>,
    check: impl Fn(&R::View) -> bool,
) -> Result<String, String> {
    let b = b.open_mode(open_mode(rng));
    let seg = dir.join(format!("service_{SERVICE}"));
    let before = inode(&seg);
    let (server, client);
    if rng.chance(1, 2) {
        server = b.server().map_err(opened("server"))?;
        client = b.client().map_err(opened("client"))?;
    } else {
        client = b.client().map_err(opened("client"))?;
        server = b.server().map_err(opened("server"))?;
    }
    let after = inode(&seg);
    let pending = if rng.chance(1, 2) {
        loan(&client, request)
    } else {
        client.send(request)
    };
    run.op("call", &pending);
    let max = client.max_request_size();
    if pending.is_ok() && request_len > max {
        run.wrong(format!(
            "a request of {request_len} bytes was taken by a service of maximum {max}"
        ));
    }
    let max = server.max_response_size();
    for _ in 0..10 {
        let r = server.try_receive();
        run.op("serve", &r);
        match r {
            Ok(req) => {
                let r = respond(req);
                if r.is_ok() && response_len > max {
                    run.wrong(format!(
                        "a response of {response_len} bytes was taken by a service of maximum \
                         {max}"
                    ));
                }
                run.op("respond", &r);
            }
            Err(ReceiveError::Empty) => break,
            Err(_) => {}
        }
    }
    if let Ok(p) = pending {
        let r = p.wait_timeout(Duration::from_millis(2));
        run.op("response", &r);
        if let Ok(resp) = &r {
            if !check(resp) {
                run.wrong("the client's response does not answer its request".into());
            }
        }
    }
    // A second client leaves with calls in flight; the server leaves holding a request (it is
    // aborted); a new server answers what is left; the first client calls once more.
    let r = b.client();
    run.op("join client", &r);
    if let Ok(client2) = r {
        let p1 = client2.send(request);
        run.op("call", &p1);
        drop(p1);
    }
    let held = server.try_receive();
    run.op("serve", &held);
    drop(held);
    drop(server);
    let r = b.server();
    run.op("join server", &r);
    if let Ok(server) = r {
        let pending = client.send(request);
        run.op("call", &pending);
        for _ in 0..10 {
            let r = server.try_receive();
            run.op("serve", &r);
            match r {
                Ok(req) => run.op("respond", &respond(req)),
                Err(ReceiveError::Empty) => break,
                Err(_) => {}
            }
        }
        if let Ok(mut p) = pending {
            let r = p.try_wait();
            run.op("response", &r);
            if let Ok(Some(resp)) = &r {
                if !check(resp) {
                    run.wrong("the client's response does not answer its request".into());
                }
            }
        }
    }
    Ok(fate(before, after).to_string())
}

/// A call made with a request loan (written in place).
type LoanCall<Q, R> = for<'c> fn(
    &'c ringbus::Client<Q, R>,
    &<Q as Payload>::Input,
) -> Result<ringbus::Pending<'c, R>, ringbus::CallError>;

fn loan_bytes<'c>(
    c: &'c ringbus::Client<Bytes, u64>,
    request: &[u8],
) -> Result<ringbus::Pending<'c, u64>, ringbus::CallError> {
    let mut loan = c.loan(request.len())?;
    loan.copy_from_slice(request);
    Ok(loan.send())
}

fn loan_pod<'c, T: bytemuck::Pod, R: Payload + ?Sized>(
    c: &'c ringbus::Client<T, R>,
    request: &T,
) -> Result<ringbus::Pending<'c, R>, ringbus::CallError> {
    let mut loan = c.loan()?;
    *loan = *request;
    Ok(loan.send())
}

/// A response, with a loan (written in place) for every other value.
fn answer<Q: Payload + ?Sized, T: bytemuck::Pod>(
    r: ringbus::Request<'_, Q, T>,
    v: T,
    in_place: bool,
) -> Result<(), ringbus::SendError> {
    if in_place {
        let mut loan = r.loan()?;
        *loan = v;
        loan.send();
        Ok(())
    } else {
        r.respond(&v)
    }
}

/// A consumer and a producer of an in-memory queue: receive what waits, send, receive again.
fn run_queue<P: Payload + ?Sized>(
    b: QueueBuilder<P>,
    dir: &Path,
    rng: &mut Rng,
    run: &mut Run,
    mut send: impl FnMut(
        &mut ringbus::Producer<P>,
        &mut Rng,
        &mut Run,
        usize,
    ) -> Result<u64, ringbus::SendError>,
    check: impl Fn(&P::View) -> Option<String>,
) -> Result<String, String> {
    let b = b.open_mode(open_mode(rng));
    let seg = dir.join(format!("queue_{QUEUE}"));
    let before = inode(&seg);
    let c = b.consumer().map_err(opened("consumer"))?;
    let after = inode(&seg);
    let mut p = b.producer().map_err(opened("producer"))?;
    drain(&c, rng, run, 6, |v| check(v));
    for i in 0..3 {
        let r = send(&mut p, rng, run, i);
        run.op("send", &r);
    }
    drain(&c, rng, run, 8, |v| check(v));
    let _ = c.stats();
    // A second consumer takes deliveries and leaves holding them (they go back); the producer
    // leaves and another joins.
    let r = b.consumer();
    run.op("join consumer", &r);
    if let Ok(c2) = r {
        let held: Vec<_> = (0..2).filter_map(|_| c2.try_receive().ok()).collect();
        drop(held);
    }
    drop(p);
    let r = b.producer();
    run.op("join producer", &r);
    if let Ok(mut p) = r {
        let r = send(&mut p, rng, run, 7);
        run.op("send", &r);
    }
    drain(&c, rng, run, 8, |v| check(v));
    Ok(fate(before, after).to_string())
}

/// Receives up to `n` messages, acknowledging, handing back or dropping each.
fn drain<P: Payload + ?Sized>(
    c: &Consumer<P>,
    rng: &mut Rng,
    run: &mut Run,
    n: usize,
    check: impl Fn(&P::View) -> Option<String>,
) {
    let mut held = Vec::new();
    for _ in 0..n {
        let r = c.try_receive();
        run.op("receive", &r);
        match r {
            Ok(d) => {
                if let Some(why) = check(&*d) {
                    run.wrong(why);
                }
                match rng.weighted(&[70, 12, 8, 10]) {
                    0 => run.op("ack", &d.ack()),
                    1 => run.op("nack", &d.nack()),
                    2 => drop(d),
                    _ => held.push(d),
                }
            }
            Err(ReceiveError::Empty) => break,
            Err(ReceiveError::TooManyHeld(_)) => held.clear(),
            Err(_) => {}
        }
    }
}

fn run_queue_bytes(dir: &Path, n: u64, rng: &mut Rng, run: &mut Run) -> Result<String, String> {
    let node = Node::with_root(dir).map_err(opened("node"))?;
    run_queue(
        queue_bytes(&node),
        dir,
        rng,
        run,
        |p, rng, run, i| {
            let max = p.max_message_size();
            let len = msg_len(rng, max);
            let r = if rng.chance(1, 3) {
                p.loan(len).and_then(|mut loan| {
                    loan.fill(0x77);
                    loan.send()
                })
            } else {
                p.send(&case_msg(n, i, len))
            };
            if len > max && r.is_ok() {
                run.wrong(format!(
                    "a message of {len} bytes was taken by a queue of maximum {max}"
                ));
            }
            r
        },
        |v: &[u8]| {
            let _ = v.iter().fold(0u8, |a, b| a ^ b);
            (v.len() > ringbus::queue::MAX_MESSAGE_SIZE)
                .then(|| format!("a delivery of {} bytes", v.len()))
        },
    )
}

fn run_queue_pod(dir: &Path, rng: &mut Rng, run: &mut Run) -> Result<String, String> {
    let node = Node::with_root(dir).map_err(opened("node"))?;
    run_queue(
        queue_pod(&node),
        dir,
        rng,
        run,
        |p, rng, run, i| {
            let max = p.max_message_size();
            let loan = rng.chance(1, 2);
            let r = if loan {
                p.loan().and_then(|mut loan| {
                    loan[0] = i as u64;
                    loan[511] = i as u64;
                    loan.send()
                })
            } else {
                p.send(&[i as u64; 512])
            };
            let size = std::mem::size_of::<QueuePod>();
            if size > max && r.is_ok() {
                run.wrong(format!(
                    "a {} of a {size}-byte Pod was granted by a queue whose maximum message \
                     size is {max} (it writes past the slot)",
                    if loan { "loan" } else { "send" }
                ));
            }
            r
        },
        |v: &QueuePod| {
            let _ = v.iter().fold(0u64, |a, b| a ^ b);
            None
        },
    )
}

fn run_queue_rkyv(dir: &Path, n: u64, rng: &mut Rng, run: &mut Run) -> Result<String, String> {
    let node = Node::with_root(dir).map_err(opened("node"))?;
    run_queue(
        queue_rkyv(&node),
        dir,
        rng,
        run,
        |p, _, _, i| p.send(&job(n.wrapping_mul(8) + i as u64)),
        |v: &ArchivedJob| {
            let sum: u64 = v.tags.iter().map(|t| u64::from(t.to_native())).sum();
            let _ = (v.id.to_native(), v.name.as_str().len(), sum);
            None
        },
    )
}

/// A durable queue: the consumer's open recovers it (when nobody registered in it lives); what it
/// delivers after a recovery must be a message that was sent.
fn run_durable(
    dir: &Path,
    n: u64,
    rng: &mut Rng,
    run: &mut Run,
    pre_recoveries: Option<u64>,
    payload_only: bool,
) -> Result<String, String> {
    let node = Node::with_root(dir).map_err(opened("node"))?;
    // Whether the case left log segment files: a log without any takes the ring's record size
    // when it is opened, so the case's own record size only binds while files exist.
    let log_files = std::fs::read_dir(dir.join(format!("queue_{DURABLE}.log"))).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".seg"))
    });
    let sync = if rng.chance(1, 8) {
        SyncPolicy::Always
    } else {
        SyncPolicy::Never
    };
    let b = durable(&node, dir)
        .sync_policy(sync)
        .open_mode(open_mode(rng));
    let c = b.consumer().map_err(opened("consumer"))?;
    let stats = c.stats();
    let recovered = pre_recoveries.is_some_and(|p| stats.recoveries == p.wrapping_add(1));
    let mut sent = durable_sent();
    let verify = |run: &mut Run, sent: &HashSet<Vec<u8>>, got: &[u8], pos: u64| {
        if sent.contains(got) {
            return;
        }
        if recovered {
            run.wrong(format!(
                "after a recovery, position {pos} delivered {} bytes that were never sent: {:?}",
                got.len(),
                String::from_utf8_lossy(&got[..got.len().min(64)])
            ));
        } else {
            // Records of a live ring are read without their checksum, by design.
            run.ops.push("receive:unverified (live ring)".into());
        }
    };
    let receive = |run: &mut Run, rng: &mut Rng, sent: &HashSet<Vec<u8>>, ack_all: bool| {
        let mut held = Vec::new();
        for _ in 0..24 {
            let r = c.try_receive();
            run.op("receive", &r);
            match r {
                Ok(d) => {
                    verify(run, sent, &d[..], d.position());
                    match if ack_all {
                        0
                    } else {
                        rng.weighted(&[75, 10, 5, 10])
                    } {
                        0 => run.op("ack", &d.ack()),
                        1 => run.op("nack", &d.nack()),
                        2 => drop(d),
                        _ => held.push(d),
                    }
                }
                Err(ReceiveError::Empty) => break,
                Err(ReceiveError::TooManyHeld(_)) => held.clear(),
                Err(_) => {}
            }
        }
    };
    let progress = payload_only && recovered;
    receive(run, rng, &sent, progress);
    let mut p = b.producer().map_err(opened("producer"))?;
    let max = p.max_message_size();
    for i in 0..3 {
        let len = msg_len(rng, D_MAX.min(max));
        let m = case_msg(n, i, len);
        sent.insert(m.clone());
        let r = if rng.chance(1, 4) && len <= max {
            p.loan(len).and_then(|mut loan| {
                loan.copy_from_slice(&m);
                loan.send()
            })
        } else {
            p.send(&m)
        };
        // The log opened (its header says records of D_MAX bytes, or the open failed): a
        // message longer than that does not fit its record, whatever the ring says. (With no
        // file left, the log was made anew with the ring's record size.)
        if log_files && len > max.min(D_MAX) && r.is_ok() {
            run.wrong(format!(
                "a message of {len} bytes was taken by a durable queue whose ring says {max} \
                 and whose log records hold {D_MAX}"
            ));
        }
        run.op("send", &r);
    }
    receive(run, rng, &sent, progress);
    if progress {
        // Only payload bytes of log records were changed: the recovery skipped what it found
        // corrupt, and the queue must go on taking and delivering messages.
        for i in 0..2 * D_CAP {
            let m = case_msg(n, 100 + i, 16);
            sent.insert(m.clone());
            if let Err(e) = p.send(&m) {
                run.wrong(format!(
                    "the queue stopped making progress: send {i} after every message was \
                     received and acknowledged failed with {e:?} (stats {:?})",
                    c.stats()
                ));
                break;
            }
            let mut got = false;
            for _ in 0..4 {
                match c.try_receive() {
                    Ok(d) => {
                        verify(run, &sent, &d[..], d.position());
                        got |= d[..] == m[..];
                        let _ = d.ack();
                        if got {
                            break;
                        }
                    }
                    Err(ReceiveError::Empty) => break,
                    Err(_) => {}
                }
            }
            if !got {
                run.wrong(format!(
                    "the queue stopped making progress: message {i}, sent after every message \
                     was received and acknowledged, was not delivered (stats {:?})",
                    c.stats()
                ));
                break;
            }
        }
    }
    let stats = c.stats();
    let end = if recovered {
        if stats.torn > 0 {
            "ok (recovered, torn records)".to_string()
        } else {
            "ok (recovered)".to_string()
        }
    } else {
        "ok (joined)".to_string()
    };
    // Every handle leaves; a new consumer opens the queue again (recovering it once more when
    // nobody registered in it lives), and what it delivers must have been sent.
    drop((p, c));
    let r = b.consumer();
    run.op("reopen consumer", &r);
    if let Ok(c) = r {
        let again = c.stats().recoveries == stats.recoveries.wrapping_add(1);
        for _ in 0..24 {
            match c.try_receive() {
                Ok(d) => {
                    if !sent.contains(&d[..]) && again {
                        run.wrong(format!(
                            "after a second recovery, position {} delivered {} bytes that were \
                             never sent",
                            d.position(),
                            d.len()
                        ));
                    }
                    let _ = d.ack();
                }
                Err(ReceiveError::Empty) => break,
                Err(_) => {}
            }
        }
    }
    Ok(end)
}

/// Runs `case` in `dir`: how it ended (an error label or an ok label) and what it did.
fn run_case(case: &Case, dir: &Path, n: u64, rng: &mut Rng) -> (Result<String, String>, Run) {
    let mut run = Run::default();
    observe(dir, &mut run);
    let ring = case
        .files
        .iter()
        .find(|f| !f.log && f.rel == case.kind.file())
        .and_then(|f| f.bytes())
        .filter(|b| b.len() >= 568)
        .map(|b| get_u64(b, 552));
    let end = match case.kind {
        Kind::TopicBytes => run_topic_bytes(dir, n, rng, &mut run),
        Kind::TopicPod => run_topic_pod(dir, rng, &mut run),
        Kind::ServiceBytes => {
            let node = Node::with_root(dir).map_err(opened("node"));
            let request = case_msg(n, 0, 20);
            let want = common::checksum(&request);
            node.and_then(|node| {
                run_service(
                    service_bytes(&node),
                    dir,
                    rng,
                    &mut run,
                    (&request, request.len(), 8),
                    loan_bytes,
                    |r| {
                        let v = common::checksum(&r);
                        answer(r, v, v % 2 == 0)
                    },
                    |v: &u64| *v == want,
                )
            })
        }
        Kind::ServicePod => Node::with_root(dir)
            .map_err(opened("node"))
            .and_then(|node| {
                let request = [n as u32, 7, 8, 9];
                let want = answer_pod(&request);
                run_service(
                    service_pod(&node),
                    dir,
                    rng,
                    &mut run,
                    (&request, 16, 8),
                    loan_pod,
                    |r| {
                        let v = answer_pod(&r);
                        answer(r, v, v[0] % 2 == 0)
                    },
                    |v: &[u32; 2]| *v == want,
                )
            }),
        Kind::ServiceLong => Node::with_root(dir)
            .map_err(opened("node"))
            .and_then(|node| {
                let request = LongName {
                    words: [n as u32, 1, 2, 3],
                };
                let want = u64::from(request.words.iter().sum::<u32>());
                run_service(
                    service_long(&node),
                    dir,
                    rng,
                    &mut run,
                    (&request, 16, 8),
                    loan_pod,
                    |r| {
                        let v = u64::from(r.words.iter().fold(0u32, |a, b| a.wrapping_add(*b)));
                        answer(r, v, v % 2 == 0)
                    },
                    |v: &u64| *v == want,
                )
            }),
        Kind::QueueBytes => run_queue_bytes(dir, n, rng, &mut run),
        Kind::QueuePod => run_queue_pod(dir, rng, &mut run),
        Kind::QueueRkyv => run_queue_rkyv(dir, n, rng, &mut run),
        Kind::DurableCrashed | Kind::DurableClean => {
            run_durable(dir, n, rng, &mut run, ring, case.payload_only)
        }
    };
    (end, run)
}

/// An observer (`ringbus list`, `inspect`, `clean --dry-run`) reads whatever the case made of the
/// files without a panic or a hang, and changes none of them.
fn observe(dir: &Path, run: &mut Run) {
    let before = snapshot(dir);
    let listed = ringbus::admin::list(dir);
    run.op("admin-list", &listed);
    for seg in listed.iter().flatten() {
        let found = ringbus::admin::inspect(dir, &seg.name);
        run.op("admin-inspect", &found);
    }
    run.op("admin-clean-dry", &ringbus::admin::clean(dir, true));
    if snapshot(dir) != before {
        run.wrong("an observer (admin list, inspect, clean --dry-run) changed a file".into());
    }
}

// ---------------------------------------------------------------------------------------------
// The child process: runs cases, reports each on stdout
// ---------------------------------------------------------------------------------------------

/// Panics seen by the hook since the last take: (thread, message and location).
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// The case running now, for the watchdog: (case number, description, start).
static CURRENT: Mutex<Option<(u64, String, Instant)>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = if let Some(s) = info.payload().downcast_ref::<&str>() {
            s.to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "(no message)".to_string()
        };
        let at = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let thread = std::thread::current().name().unwrap_or("?").to_string();
        let line = format!("{msg} at {at} (thread {thread})");
        // The child's stderr goes to a file the parent reads when the child dies.
        eprintln!("panic: {line}");
        lock(&PANICS).push(line);
    }));
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\t'], " ")
}

/// The scratch directory of process `pid` for `tag`.
fn scratch_of(pid: u32, tag: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let parent = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    parent.join(format!("ringbus-mutation-{pid}-{tag}"))
}

/// Where a child keeps its files: a tmpfs if there is one (cases are many and small).
fn scratch(tag: &str) -> PathBuf {
    let dir = scratch_of(std::process::id(), tag);
    let _ = std::fs::remove_dir_all(&dir);
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .unwrap();
    dir
}

struct World {
    bases: Vec<Base>,
    pool: Vec<BaseFile>,
    ids: Ids,
    seed: u64,
    dir: PathBuf,
}

impl World {
    fn new(format: Format) -> World {
        let dir = scratch(format.name());
        let bases: Vec<Base> = KINDS
            .iter()
            .map(|&k| make_base(k, &dir.join(format!("base-{k:?}"))))
            .collect();
        let pool = bases.iter().flat_map(|b| b.files.iter().cloned()).collect();
        World {
            bases,
            pool,
            ids: Ids::new(),
            seed: seed(),
            dir,
        }
    }

    fn case(&self, format: Format, n: u64) -> (Case, Rng) {
        build_case(&self.bases, &self.pool, self.ids, self.seed, format, n)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A case's outcome: the ending label, the operations, failures (kind, message).
struct Outcome {
    end: String,
    took: Duration,
    ops: Vec<String>,
    failures: Vec<(String, String)>,
}

fn execute(world: &World, format: Format, n: u64, verbose: bool) -> Outcome {
    let (case, mut rng) = world.case(format, n);
    let desc = case.describe();
    if verbose {
        eprintln!("case {n} of {}: {desc}", format.name());
    }
    let dir = world.dir.join(format!("case-{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    materialize(&dir, &case);
    let started = Instant::now();
    *lock(&CURRENT) = Some((n, desc.clone(), started));
    lock(&PANICS).clear();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_case(&case, &dir, n, &mut rng)
    }));
    *lock(&CURRENT) = None;
    let mut failures = Vec::new();
    let panics = std::mem::take(&mut *lock(&PANICS));
    let (end, ops) = match result {
        Ok((end, run)) if verbose => {
            let mut last = started;
            for (op, at) in run.ops.iter().zip(&run.at) {
                eprintln!("  {op} after {:?}", at.duration_since(last));
                last = *at;
            }
            (end.unwrap_or_else(|e| e), run.ops)
        }
        Ok((end, run)) => {
            for w in run.wrong {
                failures.push(("wrong result".to_string(), w));
            }
            for p in &panics {
                failures.push(("panic".to_string(), p.clone()));
            }
            (end.unwrap_or_else(|e| e), run.ops)
        }
        Err(_) => {
            let msg = panics
                .first()
                .cloned()
                .unwrap_or_else(|| "(unknown panic)".into());
            failures.push(("panic".to_string(), msg));
            ("PANIC".to_string(), Vec::new())
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    if verbose {
        eprintln!("ended: {end}\noperations: {}", ops.join(", "));
        for (k, m) in &failures {
            eprintln!("FAILURE ({k}): {m}");
        }
    }
    Outcome {
        end,
        took: started.elapsed(),
        ops,
        failures: failures
            .into_iter()
            .map(|(k, m)| (k, format!("{m} | {desc}")))
            .collect(),
    }
}

/// CPU time (user and system, in clock ticks of 10 ms) of thread `tid` of this process.
fn thread_ticks(tid: i32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) else {
        return 0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0;
    };
    // After the command name: field 3 (state) first; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat[close + 1..].split_ascii_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

/// Where this process's case thread is stuck: its innermost ringbus frames, read by gdb (if there
/// is one) attached to this process.
fn where_hung() -> String {
    let out = std::env::temp_dir().join(format!("ringbus-mutation-gdb-{}", std::process::id()));
    if std::env::var_os(NO_GDB_ENV).is_some() {
        return "(not looked at: many hangs already)\t".into();
    }
    let Ok(file) = std::fs::File::create(&out) else {
        return "(unknown)\t".into();
    };
    let spawned = Command::new("gdb")
        .args(["-nx", "-batch", "-p", &std::process::id().to_string()])
        .args(["-ex", "set width 0", "-ex", "set pagination off"])
        .args(["-ex", "thread apply all bt 40"])
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut gdb) = spawned else {
        return "(no gdb to tell where)\t".into();
    };
    let started = Instant::now();
    while gdb.try_wait().ok().flatten().is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = gdb.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = gdb.wait();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    // Frames: "#3  0x… in ringbus::queue::consumer::ConsumerCore::fill (…) at src/queue/consumer.rs:258".
    let frames: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with('#') && l.contains(" at src/"))
        .map(|l| {
            let rest = l.trim_start_matches(|c: char| c == '#' || c.is_ascii_digit());
            let rest = rest.trim_start();
            let rest = match rest.strip_prefix("0x") {
                Some(r) => r.split_once(" in ").map_or(r, |(_, f)| f),
                None => rest,
            };
            // The function's path without generic arguments, its last two segments.
            let (mut func, mut depth) = (String::new(), 0);
            for ch in rest.split(" (").next().unwrap_or("").chars() {
                match ch {
                    '<' => depth += 1,
                    '>' => depth -= 1,
                    _ if depth == 0 => func.push(ch),
                    _ => {}
                }
            }
            let parts: Vec<&str> = func.rsplit("::").take(2).collect();
            let loc = l.rsplit(" at ").next().unwrap_or("");
            format!("{}::{} {loc}", parts.get(1).unwrap_or(&""), parts[0])
        })
        .collect();
    if frames.is_empty() {
        return "(no ringbus frame)\t".into();
    }
    // The class: leaf helpers (bounds checks, offsets) left out; a wait for a lock is named by
    // where the lock is taken, a loop by its function.
    let significant: Vec<&String> = frames
        .iter()
        .filter(|f| !f.contains("src/shm/region.rs") && !f.contains("src/queue/layout.rs"))
        .collect();
    let key = match significant.first() {
        Some(f) if f.contains("src/sync/lock.rs") => {
            let taker = significant.iter().find(|f| !f.contains("src/sync/lock.rs"));
            format!(
                "waits for a lock word for ever, taken at {}",
                taker.map_or("?", |t| t.as_str())
            )
        }
        Some(f) => {
            let func = f.split(' ').next().unwrap_or("");
            let file = f
                .split(' ')
                .nth(1)
                .unwrap_or("")
                .split(':')
                .next()
                .unwrap_or("");
            format!("loops in {func} ({file})")
        }
        None => format!("loops in {}", frames[0]),
    };
    format!(
        "{key}\t{}",
        frames
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join(" <- ")
    )
}

fn child_main(format: Format) {
    let world = World::new(format);
    let mut out = std::io::stdout().lock();
    if let Some(n) = env_u64(DESCRIBE_ENV) {
        let (case, _) = world.case(format, n);
        writeln!(out, "@@d\t{}", one_line(&case.describe())).unwrap();
        return;
    }
    let from = env_u64(FROM_ENV).unwrap_or(0);
    let to = env_u64(TO_ENV).unwrap_or(from);
    install_panic_hook();
    let limit = hang_limit();
    // Cases run on this thread; the watchdog reads its CPU time.
    let tid = rustix::thread::gettid().as_raw_nonzero().get();
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            // (case, CPU ticks of the case thread when the watchdog first saw the case)
            let mut seen: Option<(u64, u64)> = None;
            loop {
                std::thread::sleep(Duration::from_millis(100));
                let current = lock(&CURRENT);
                let Some((n, desc, started)) = &*current else {
                    continue;
                };
                let ticks = thread_ticks(tid);
                let base = match seen {
                    Some((m, t)) if m == *n => t,
                    _ => {
                        seen = Some((*n, ticks));
                        ticks
                    }
                };
                // A case stuck in a loop burns its CPU; one that is merely slow (the machine is
                // loaded, a bounded wait sleeps: a corrupt lock word costs each operation
                // `lock::HOLD_LIMIT`, and a case makes a few dozen) does not: it gets longer.
                let busy = Duration::from_millis(ticks.saturating_sub(base) * 10);
                let wall = started.elapsed();
                if (wall > limit && busy >= limit / 2)
                    || wall > (limit * 8).max(Duration::from_secs(40))
                {
                    let at = where_hung();
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "@@h\t{n}\t{}\t{at}", one_line(desc));
                    let _ = out.flush();
                    eprintln!("mutation case {n} hangs ({wall:?}, {busy:?} on a CPU): {desc}");
                    std::process::abort();
                }
            }
        })
        .unwrap();
    for b in world.bases.iter().filter(|b| b.kind.format() == format) {
        for t in &b.trouble {
            writeln!(out, "@@b\t{:?}: {}", b.kind, one_line(t)).unwrap();
        }
    }
    writeln!(out, "@@ready").unwrap();
    drop(out);
    for n in from..to {
        let o = execute(&world, format, n, false);
        let mut out = std::io::stdout().lock();
        for (kind, msg) in &o.failures {
            writeln!(out, "@@f\t{n}\t{kind}\t{}", one_line(msg)).unwrap();
        }
        writeln!(
            out,
            "@@r\t{n}\t{}\t{}\t{}",
            one_line(&o.end),
            o.ops.join(","),
            o.took.as_micros()
        )
        .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The parent: runs children over the whole range, collects outcomes and failures
// ---------------------------------------------------------------------------------------------

struct Failure {
    case: u64,
    kind: String,
    message: String,
}

#[derive(Default)]
struct Summary {
    cases: u64,
    ends: BTreeMap<String, u64>,
    ops: BTreeMap<String, u64>,
    failures: Vec<Failure>,
    /// The slowest cases that ended: (microseconds, case).
    slowest: Vec<(u64, u64)>,
}

/// A failure's class: its kind and message with numbers and the case description left out
/// (source locations are kept: they name the failing line).
fn class(f: &Failure) -> String {
    let msg = f.message.split(" | ").next().unwrap_or("");
    let words: Vec<String> = msg
        .split(' ')
        .map(|w| {
            if w.contains(".rs:") {
                return w.to_string();
            }
            let mut out = String::new();
            let mut in_num = false;
            for ch in w.chars() {
                if ch.is_ascii_digit() {
                    if !in_num {
                        out.push('N');
                    }
                    in_num = true;
                } else {
                    in_num = false;
                    out.push(ch);
                }
            }
            out
        })
        .collect();
    let cut: String = words.join(" ").chars().take(200).collect();
    format!("{}: {cut}", f.kind)
}

fn child_command(format: Format) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "mutation_child",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, format.name())
    .env(SEED_ENV, seed().to_string())
    .env(HANG_ENV, hang_limit().as_secs().to_string())
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    cmd
}

fn describe_in_child(format: Format, n: u64) -> String {
    let out = child_command(format)
        .env(DESCRIBE_ENV, n.to_string())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.find("@@d\t").map(|at| l[at + 4..].to_string()))
        .unwrap_or_else(|| "(no description)".into())
}

fn run_format(format: Format) {
    if let Ok(only) = std::env::var(FORMAT_ENV) {
        if only != format.name() {
            return;
        }
    }
    if let Some(n) = env_u64(CASE_ENV) {
        // One case, here, verbosely (a panic shows its backtrace).
        let world = World::new(format);
        let o = execute(&world, format, n, true);
        assert!(o.failures.is_empty(), "case {n} failed");
        return;
    }
    let cases = env_u64(CASES_ENV).unwrap_or_else(|| default_cases(format));
    let started = Instant::now();
    let mut s = Summary::default();
    let logs = scratch(&format!("{}-stderr", format.name()));
    let mut from = 0;
    let mut hangs = 0;
    while from < cases {
        let stderr_path = logs.join(format!("from-{from}"));
        let mut cmd = child_command(format);
        if hangs >= GDB_HANGS {
            cmd.env(NO_GDB_ENV, "1");
        }
        let mut child = cmd
            .env(FROM_ENV, from.to_string())
            .env(TO_ENV, cases.to_string())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let mut ready = false;
        let mut last = None;
        let mut hung = None;
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            let Some(at) = line.find("@@") else { continue };
            let mut parts = line[at..].split('\t');
            match parts.next() {
                Some("@@ready") => ready = true,
                Some("@@b") => {
                    let message = parts.next().unwrap_or("").to_string();
                    if !s.failures.iter().any(|f| f.message == message) {
                        s.failures.push(Failure {
                            case: 0,
                            kind: "making the valid file".into(),
                            message,
                        });
                    }
                }
                Some("@@r") => {
                    let n: u64 = parts.next().unwrap().parse().unwrap();
                    let end = parts.next().unwrap_or("").to_string();
                    *s.ends.entry(end).or_default() += 1;
                    for op in parts
                        .next()
                        .unwrap_or("")
                        .split(',')
                        .filter(|o| !o.is_empty())
                    {
                        *s.ops.entry(op.to_string()).or_default() += 1;
                    }
                    let us: u64 = parts.next().and_then(|t| t.parse().ok()).unwrap_or(0);
                    s.slowest.push((us, n));
                    s.slowest.sort_unstable_by(|a, b| b.cmp(a));
                    s.slowest.truncate(5);
                    s.cases += 1;
                    last = Some(n);
                }
                Some("@@f") => {
                    let case = parts.next().unwrap().parse().unwrap();
                    let kind = parts.next().unwrap_or("").to_string();
                    let message = parts.next().unwrap_or("").to_string();
                    s.failures.push(Failure {
                        case,
                        kind,
                        message,
                    });
                }
                Some("@@h") => {
                    let n: u64 = parts.next().unwrap().parse().unwrap();
                    let desc = parts.next().unwrap_or("").to_string();
                    let key = parts.next().unwrap_or("").to_string();
                    let at = parts.next().unwrap_or("").to_string();
                    hung = Some((n, desc, key, at));
                }
                _ => {}
            }
        }
        let status = child.wait().unwrap();
        // A child that crashed or hung left its files.
        let _ = std::fs::remove_dir_all(scratch_of(child.id(), format.name()));
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        if status.success() && last == Some(cases - 1) {
            break;
        }
        assert!(
            ready,
            "the {} child failed before its first case ({status}): {stderr}",
            format.name()
        );
        // The case after the last one reported stopped the child.
        let n = last.map_or(from, |l| l + 1);
        let tail: String = {
            let t = stderr.trim();
            let skip = t.chars().count().saturating_sub(600);
            one_line(&t.chars().skip(skip).collect::<String>())
        };
        let (kind, message) = match hung {
            Some((h, desc, key, at)) if h == n => {
                hangs += 1;
                (
                    "hang".to_string(),
                    format!("{key} | over {:?}, in {at}: {desc}", hang_limit()),
                )
            }
            _ => {
                use std::os::unix::process::ExitStatusExt;
                let how = match status.signal() {
                    Some(sig) => format!("killed by signal {sig}"),
                    None => format!("exited with {status}"),
                };
                (
                    "crash".to_string(),
                    format!("{how}: {tail} | {}", describe_in_child(format, n)),
                )
            }
        };
        *s.ends.entry(kind.to_uppercase()).or_default() += 1;
        s.cases += 1;
        s.failures.push(Failure {
            case: n,
            kind,
            message,
        });
        from = n + 1;
    }
    let _ = std::fs::remove_dir_all(&logs);
    report(format, &s, started.elapsed());
    assert!(
        s.failures.is_empty(),
        "{} of {} mutated {} files failed (see the report above; seed {:#x})",
        s.failures.len(),
        s.cases,
        format.name(),
        seed()
    );
}

/// Writes the summary to stderr, past the test harness's capture (it is always shown).
fn report(format: Format, s: &Summary, took: Duration) {
    let mut r = String::new();
    let seed = seed();
    r += &format!(
        "\n== mutation tests, {} files: {} cases, seed {seed:#x}, {:.1} s\n",
        format.name(),
        s.cases,
        took.as_secs_f64()
    );
    r += &format!("{:<58} {:>8}\n", "how a case ended", "cases");
    for (end, n) in &s.ends {
        r += &format!("  {end:<56} {n:>8}\n");
    }
    r += &format!(
        "slowest cases: {}\n",
        s.slowest
            .iter()
            .map(|(us, n)| format!("{n} ({:.1} ms)", *us as f64 / 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    r += &format!("{:<58} {:>8}\n", "operations (all cases)", "count");
    for (op, n) in &s.ops {
        r += &format!("  {op:<56} {n:>8}\n");
    }
    let mut classes: BTreeMap<String, Vec<&Failure>> = BTreeMap::new();
    for f in &s.failures {
        classes.entry(class(f)).or_default().push(f);
    }
    r += &format!(
        "failures: {} in {} classes\n",
        s.failures.len(),
        classes.len()
    );
    for (c, fs) in &classes {
        r += &format!("  [{}x] {c}\n", fs.len());
        for f in fs.iter().take(3) {
            if f.kind == "making the valid file" {
                r += &format!("      (before the first case) {}\n", f.message);
                continue;
            }
            r += &format!(
                "      reproduce: {FORMAT_ENV}={} {SEED_ENV}={seed} {CASE_ENV}={} cargo test --test \
                 mutation -- --nocapture\n      {}\n",
                format.name(),
                f.case,
                f.message
            );
        }
    }
    let _ = std::io::stderr().write_all(r.as_bytes());
}
