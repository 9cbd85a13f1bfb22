//! `ringbus bench durable`: what a durable topic costs, beside what it is built from.
//!
//! Four measurements, in one run, on a directory on disk (`DiskDir`, as the durable queue
//! benchmarks):
//! - **append**: one publisher sends 64 B and 1 KiB messages as fast as it can under each sync
//!   policy (`Never`, `Batch(10 ms)`, `Always`); msgs/s and MB/s of message bytes, median of
//!   the rounds.
//! - **replay**: a backlog of `--messages` 64 B messages (default 1,000,000) read from offset
//!   0 by a new subscriber (every record's checksum checked), beside reading the same segment
//!   files from the page cache with `std::fs::read`, in alternating rounds; msgs/s and MB/s of
//!   the files' bytes for both, and the median of the per-round ratios.
//! - **live**: one-way latency of 64 B messages (send to receive, two threads, one message in
//!   flight at a time) and streaming msgs/s, for an in-memory topic (row `ringbus`) and a
//!   durable one under each policy (rows `ringbus-durable-never`, `-batch`, `-always`), rounds
//!   alternating the rows; ratios are medians over rounds of the durable row's figure over the
//!   in-memory row's in the same round.
//! - **rebalance**: a two-partition group of this process and a child member (`ringbus
//!   bench-durable-member`); the child is SIGKILLed, and the time until this member reads both
//!   partitions is measured, over `--trials` trials (p50 and max), for a detection interval
//!   of `--detect-ms`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringbus::durable::{self, StartAt};
use ringbus::{Bytes, Node, SyncPolicy};
use serde_json::json;

use super::queue::DiskDir;
use super::stats::{median, new_histogram};
use super::util::{allowed_cpus, err, pin_current_thread, positive_usize, Result};

/// `ringbus bench durable --help`: what the command does (above the flags).
pub const LONG_ABOUT: &str = "\
Durable topics beside what they are built from, in one run on a directory on disk:
append msgs/s and MB/s (64 B and 1 KiB, each sync policy); replay of a backlog of N
messages from offset 0 beside std::fs::read of the same files from the page cache; live
one-way latency (p50/p99) and streaming msgs/s of an in-memory topic (row ringbus) and a
durable one (rows ringbus-durable-never, -batch, -always); and the time to rebalance a
consumer group after a member is SIGKILLed (p50 and max over --trials).";

/// The command line of `ringbus bench durable`.
#[derive(clap::Args, Debug)]
pub struct DurableArgs {
    /// Print exactly one JSON object on stdout
    #[arg(long)]
    json: bool,
    /// Messages of 64 bytes in the replayed backlog
    #[arg(long, value_name = "N", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=1 << 26))]
    messages: u64,
    /// Rounds of each measurement (medians over rounds are reported)
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = positive_usize)]
    rounds: usize,
    /// Latency samples per row and round
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = positive_usize)]
    samples: usize,
    /// Rebalance trials
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = positive_usize)]
    trials: usize,
    /// Detection interval of the rebalance trials' members, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    detect_ms: u64,
    /// Publishers without their helper thread (`DurableTopicBuilder::helper_thread(false)`):
    /// each populates its pages and makes its files itself
    #[arg(long)]
    no_helper_thread: bool,
}

/// The hidden child of the rebalance trials.
#[derive(clap::Args, Debug)]
pub struct MemberArgs {
    /// The topic directory's parent
    #[arg(long)]
    dir: PathBuf,
    /// Detection interval in milliseconds
    #[arg(long)]
    detect_ms: u64,
}

const TOPIC: &str = "bench";
const GROUP: &str = "bench";
/// Messages per streaming measurement (fewer under `Always`, which syncs each).
const STREAM: u64 = 200_000;
const STREAM_ALWAYS: u64 = 2_000;
/// Latency samples under `Always` at most (each waits for the disk).
const SAMPLES_ALWAYS: usize = 1_000;

/// The sync policies measured, with their names.
const POLICIES: [(&str, SyncPolicy); 3] = [
    ("never", SyncPolicy::Never),
    ("batch", SyncPolicy::Batch(Duration::from_millis(10))),
    ("always", SyncPolicy::Always),
];

fn policy_name(p: SyncPolicy) -> &'static str {
    POLICIES
        .iter()
        .find(|(_, q)| *q == p)
        .map_or("?", |(n, _)| n)
}

/// A fresh directory for one topic under the disk directory.
fn fresh(disk: &Path, what: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = disk.join(format!("{what}-{}", N.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn bytes_topic(
    dir: &Path,
    size: usize,
    sync: SyncPolicy,
    helper: bool,
) -> durable::DurableTopicBuilder<Bytes> {
    Node::in_process()
        .topic_bytes(TOPIC)
        .max_message_size(size)
        .durable(dir)
        .sync_policy(sync)
        .helper_thread(helper)
}

struct Append {
    size: usize,
    policy: SyncPolicy,
    msgs_per_s: f64,
}

/// Append throughput of one publisher, one round.
fn append_round(disk: &Path, size: usize, policy: SyncPolicy, helper: bool) -> Result<f64> {
    let dir = fresh(disk, "append");
    let t = bytes_topic(&dir, size, policy, helper);
    let mut p = t.publisher().map_err(|e| err(e.to_string()))?;
    let msg = vec![0x5au8; size];
    let n = match policy {
        SyncPolicy::Always => STREAM_ALWAYS,
        _ if size > 512 => STREAM / 4,
        _ => STREAM,
    };
    let start = Instant::now();
    for _ in 0..n {
        p.send(&msg).map_err(|e| err(e.to_string()))?;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rate)
}

struct Replay {
    messages: u64,
    file_bytes: u64,
    replay_s: Vec<f64>,
    page_cache_s: Vec<f64>,
}

fn replay(disk: &Path, messages: u64, rounds: usize, helper: bool) -> Result<Replay> {
    let dir = fresh(disk, "replay");
    let t = bytes_topic(&dir, 64, SyncPolicy::Never, helper);
    {
        let mut p = t.publisher().map_err(|e| err(e.to_string()))?;
        let mut msg = [0u8; 64];
        for i in 0..messages {
            msg[..8].copy_from_slice(&i.to_le_bytes());
            p.send(&msg).map_err(|e| err(e.to_string()))?;
        }
    }
    let part = dir.join(format!("topic_{TOPIC}")).join("p000");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&part)
        .map_err(|e| err(e.to_string()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let file_bytes = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let mut r = Replay {
        messages,
        file_bytes,
        replay_s: Vec::new(),
        page_cache_s: Vec::new(),
    };
    for _ in 0..rounds {
        // The log, read in place.
        let start = Instant::now();
        let mut s = t
            .subscriber_at(StartAt::Earliest)
            .map_err(|e| err(e.to_string()))?;
        let (mut n, mut sum) = (0u64, 0u64);
        while let Ok(m) = s.try_receive() {
            sum = sum.wrapping_add(u64::from(m[0]));
            n += 1;
        }
        r.replay_s.push(start.elapsed().as_secs_f64());
        drop(s);
        if n != messages {
            return Err(err(format!("replay read {n} of {messages} messages")));
        }
        // The same files, copied out of the page cache.
        let start = Instant::now();
        for f in &files {
            let bytes = std::fs::read(f).map_err(|e| err(e.to_string()))?;
            sum = sum.wrapping_add(u64::from(bytes[bytes.len() / 2]));
        }
        r.page_cache_s.push(start.elapsed().as_secs_f64());
        std::hint::black_box(sum);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(r)
}

/// One live row: an in-memory topic or a durable one (with its policy).
#[derive(Clone, Copy)]
enum Live {
    Memory,
    Durable(SyncPolicy),
}

impl Live {
    fn name(self) -> String {
        match self {
            Live::Memory => "ringbus".into(),
            Live::Durable(p) => format!("ringbus-durable-{}", policy_name(p)),
        }
    }
}

/// Sends and receives of a live row, whatever the topic kind.
trait Ends: Send {
    fn send(&mut self, stamp: u64) -> Result<()>;
}
trait Recv {
    fn try_recv(&mut self) -> Option<u64>;
}

struct MemPub(ringbus::Publisher<[u64; 8]>);
struct MemSub(ringbus::Subscriber<[u64; 8]>);
struct DurPub(durable::Publisher<[u64; 8]>);
struct DurSub(durable::Subscriber<[u64; 8]>);

impl Ends for MemPub {
    fn send(&mut self, stamp: u64) -> Result<()> {
        self.0
            .send_copy(&[stamp; 8])
            .map_err(|e| err(e.to_string()))
    }
}
impl Ends for DurPub {
    fn send(&mut self, stamp: u64) -> Result<()> {
        self.0
            .send(&[stamp; 8])
            .map(|_| ())
            .map_err(|e| err(e.to_string()))
    }
}
impl Recv for MemSub {
    fn try_recv(&mut self) -> Option<u64> {
        self.0.try_receive().ok().map(|m| m[0])
    }
}
impl Recv for DurSub {
    fn try_recv(&mut self) -> Option<u64> {
        self.0.try_receive().ok().map(|m| m[0])
    }
}

/// One round of a live row: one-way latencies, and streaming msgs/s.
fn live_round(
    disk: &Path,
    row: Live,
    samples: usize,
    cpus: &[usize],
    helper: bool,
) -> Result<(Histogram<u64>, f64)> {
    let dir = fresh(disk, "live");
    let node = Node::in_process();
    let name = format!("bench-live-{}", std::process::id());
    let (publisher, subscriber): (Box<dyn Ends>, Box<dyn Recv + Send>) = match row {
        Live::Memory => {
            let t = node.topic::<[u64; 8]>(&name).capacity(1024);
            let s = t.subscriber().map_err(|e| err(e.to_string()))?;
            let p = t.publisher().map_err(|e| err(e.to_string()))?;
            (Box::new(MemPub(p)), Box::new(MemSub(s)))
        }
        Live::Durable(policy) => {
            let t = node
                .topic::<[u64; 8]>(&name)
                .durable(&dir)
                .sync_policy(policy)
                .helper_thread(helper);
            let s = t.subscriber().map_err(|e| err(e.to_string()))?;
            let p = t.publisher().map_err(|e| err(e.to_string()))?;
            (Box::new(DurPub(p)), Box::new(DurSub(s)))
        }
    };
    let always = matches!(row, Live::Durable(SyncPolicy::Always));
    let samples = if always {
        samples.min(SAMPLES_ALWAYS)
    } else {
        samples
    };
    let stream = if always { STREAM_ALWAYS } else { STREAM };
    let base = Instant::now();
    let now = move || base.elapsed().as_nanos() as u64 + 1;
    let acked = Arc::new(AtomicU64::new(0));
    let ack = acked.clone();
    let sub_cpu = cpus.get(1).copied();
    let receiver = std::thread::spawn(move || -> Result<(Histogram<u64>, f64)> {
        let mut s = subscriber;
        if let Some(c) = sub_cpu {
            pin_current_thread(c)?;
        }
        let mut hist = new_histogram();
        for i in 1..=samples as u64 {
            let stamp = loop {
                if let Some(v) = s.try_recv() {
                    break v;
                }
                std::hint::spin_loop();
            };
            hist.saturating_record(now().saturating_sub(stamp));
            // Release: the next send follows our read.
            ack.store(i, Ordering::Release);
        }
        let start = Instant::now();
        for _ in 0..stream {
            while s.try_recv().is_none() {
                std::hint::spin_loop();
            }
        }
        Ok((hist, stream as f64 / start.elapsed().as_secs_f64()))
    });
    let mut p = publisher;
    if let Some(&c) = cpus.first() {
        pin_current_thread(c)?;
    }
    for i in 1..=samples as u64 {
        p.send(now())?;
        while acked.load(Ordering::Acquire) < i {
            std::hint::spin_loop();
        }
    }
    for _ in 0..stream {
        p.send(0)?;
    }
    let got = receiver
        .join()
        .map_err(|_| err("the receiving thread panicked"))??;
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(got)
}

/// Runs the hidden child of the rebalance trials: joins the group and reads until killed.
pub fn member_main(args: &MemberArgs) -> ExitCode {
    // Dies with the benchmark, whatever ends it.
    if let Err(e) = super::process::tie_to_parent(None) {
        eprintln!("ringbus bench-durable-member: {e}");
        return ExitCode::FAILURE;
    }
    let t = Node::in_process()
        .topic::<u64>(TOPIC)
        .durable(&args.dir)
        .partitions(2);
    let mut s = match t.subscriber().and_then(|s| s.group(GROUP)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringbus bench-durable-member: {e}");
            return ExitCode::FAILURE;
        }
    };
    s.set_detect_interval(Duration::from_millis(args.detect_ms));
    let mut told = false;
    loop {
        let _ = s.receive_timeout(Duration::from_millis(1));
        if !told && !s.assigned().is_empty() {
            println!("owned");
            told = true;
        }
    }
}

/// Rebalance times after a member is SIGKILLed, in ms.
fn rebalance(disk: &Path, trials: usize, detect_ms: u64) -> Result<Vec<f64>> {
    let dir = fresh(disk, "rebalance");
    let t = Node::in_process()
        .topic::<u64>(TOPIC)
        .durable(&dir)
        .partitions(2);
    let mut me = t
        .subscriber()
        .and_then(|s| s.group(GROUP))
        .map_err(|e| err(e.to_string()))?;
    me.set_detect_interval(Duration::from_millis(detect_ms));
    let exe = std::env::current_exe().map_err(|e| err(e.to_string()))?;
    let mut times = Vec::with_capacity(trials);
    let progress = super::progress::Progress::start("rebalance trials", trials as u64, "trials");
    for _ in 0..trials {
        let mut child = Command::new(&exe)
            .args(["bench-durable-member", "--dir"])
            .arg(&dir)
            .args(["--detect-ms", &detect_ms.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| err(e.to_string()))?;
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        // Until this member let one partition go (the child takes it).
        let deadline = Instant::now() + Duration::from_secs(10);
        while me.assigned().len() != 1 {
            let _ = me.receive_timeout(Duration::from_millis(1));
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(err("the child member never got a partition"));
            }
        }
        let mut line = String::new();
        out.read_line(&mut line).map_err(|e| err(e.to_string()))?;
        if line.trim() != "owned" {
            let _ = child.kill();
            return Err(err("the child member exited before owning a partition"));
        }
        let killed = Instant::now();
        child.kill().map_err(|e| err(e.to_string()))?;
        while me.assigned().len() != 2 {
            let _ = me.receive_timeout(Duration::from_millis(1));
            if killed.elapsed() > Duration::from_secs(10) {
                return Err(err("the dead member's partition was never taken over"));
            }
        }
        times.push(killed.elapsed().as_secs_f64() * 1e3);
        let _ = child.wait();
        progress.inc(1);
    }
    drop(me);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(times)
}

/// Lets the calling thread run on every CPU of `cpus` again.
fn unpin(cpus: &[usize]) -> Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    let mut set = rustix::thread::CpuSet::new();
    for &c in cpus {
        set.set(c);
    }
    rustix::thread::sched_setaffinity(None, &set).map_err(|e| err(e.to_string()))
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * q).round() as usize]
}

/// Entry point of `ringbus bench durable`.
pub fn main(args: &DurableArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringbus bench durable: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &DurableArgs) -> Result<()> {
    // Named as the queue benchmarks' directories, so that what a killed run leaves is removed
    // by the next run.
    let disk = DiskDir::create(&format!("rb-bench-{}", std::process::id()))?;
    let d = disk.path().to_path_buf();
    // The CPUs this process may use, read before any thread is pinned.
    let cpus = allowed_cpus();
    let helper = !args.no_helper_thread;
    let rows = [
        Live::Memory,
        Live::Durable(SyncPolicy::Never),
        Live::Durable(POLICIES[1].1),
        Live::Durable(SyncPolicy::Always),
    ];
    let progress = super::progress::Progress::start(
        "ringbus bench durable",
        (args.rounds * (6 + 1 + rows.len())) as u64,
        "steps",
    );
    // Append.
    let mut appends = Vec::new();
    for size in [64usize, 1024] {
        for (_, policy) in POLICIES {
            let mut rates = Vec::new();
            for _ in 0..args.rounds {
                rates.push(append_round(&d, size, policy, helper)?);
                progress.inc(1);
            }
            appends.push(Append {
                size,
                policy,
                msgs_per_s: median(rates).unwrap_or(0.0),
            });
        }
    }
    // Replay.
    let rp = replay(&d, args.messages, args.rounds, helper)?;
    progress.inc(args.rounds as u64);
    // Live rows, rounds alternating the rows.
    let mut hists: Vec<Histogram<u64>> = rows.iter().map(|_| new_histogram()).collect();
    let mut p50s = vec![Vec::new(); rows.len()];
    let mut rates = vec![Vec::new(); rows.len()];
    for _ in 0..args.rounds {
        for (i, &row) in rows.iter().enumerate() {
            let (h, rate) = live_round(&d, row, args.samples, &cpus, helper)?;
            // Unpinned again: the next round's threads, and the rebalance trials' children,
            // get every CPU.
            unpin(&cpus)?;
            p50s[i].push(h.value_at_quantile(0.5) as f64);
            rates[i].push(rate);
            let _ = hists[i].add(&h);
            progress.inc(1);
        }
    }
    drop(progress);
    let times = rebalance(&d, args.trials, args.detect_ms)?;

    let ratio = |mine: &[f64], base: &[f64]| {
        median(mine.iter().zip(base).map(|(m, b)| m / b).collect()).unwrap_or(f64::NAN)
    };
    let mb = |bytes: f64, s: f64| bytes / s / 1e6;
    let replay_rate =
        |s: &[f64]| median(s.iter().map(|t| rp.messages as f64 / t).collect()).unwrap_or(0.0);
    let (r_msgs, pc_msgs) = (replay_rate(&rp.replay_s), replay_rate(&rp.page_cache_s));
    let bytes_per_msg = rp.file_bytes as f64 / rp.messages as f64;
    let replay_ratio = ratio(&rp.page_cache_s, &rp.replay_s);
    let (reb50, rebmax) = (quantile(&times, 0.5), quantile(&times, 1.0));
    if args.json {
        let results: Vec<_> = rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                json!({
                    "transport": row.name(),
                    "payload_bytes": 64,
                    "p50_ns": hists[i].value_at_quantile(0.5),
                    "p99_ns": hists[i].value_at_quantile(0.99),
                    "p999_ns": hists[i].value_at_quantile(0.999),
                    "max_ns": hists[i].max(),
                    "samples": hists[i].len(),
                    "msgs_per_s": median(rates[i].clone()).map(|r| r.round()),
                    "ratio_p50_to_ringbus": ratio(&p50s[i], &p50s[0]),
                    "ratio_msgs_per_s_to_ringbus": ratio(&rates[i], &rates[0]),
                })
            })
            .collect();
        let append: Vec<_> = appends
            .iter()
            .map(|a| {
                json!({
                    "message_bytes": a.size,
                    "sync": policy_name(a.policy),
                    "msgs_per_s": a.msgs_per_s.round(),
                    "mb_per_s": mb(a.msgs_per_s * a.size as f64, 1.0),
                    "ratio_msgs_per_s_to_ringbus": a.msgs_per_s / median(rates[0].clone()).unwrap_or(f64::NAN),
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "pattern": "durable",
                "latency": "one_way",
                "disk": disk.fs,
                "rounds": args.rounds,
                "helper_thread": helper,
                "results": results,
                "append": append,
                "replay": {
                    "messages": rp.messages,
                    "file_bytes": rp.file_bytes,
                    "msgs_per_s": r_msgs.round(),
                    "mb_per_s": mb(r_msgs * bytes_per_msg, 1.0),
                    "page_cache_msgs_per_s": pc_msgs.round(),
                    "page_cache_mb_per_s": mb(pc_msgs * bytes_per_msg, 1.0),
                    "ratio_to_page_cache": replay_ratio,
                },
                "rebalance": {
                    "trials": times.len(),
                    "detect_ms": args.detect_ms,
                    "p50_ms": reb50,
                    "max_ms": rebmax,
                },
            })
        );
        return Ok(());
    }
    println!(
        "ringbus bench durable: {} rounds on {} ({}), publishers' helper threads {}",
        args.rounds,
        d.display(),
        disk.fs,
        if helper { "on" } else { "off" }
    );
    println!("append (one publisher; x: msgs/s / the in-memory topic's streaming msgs/s):");
    let streaming = median(rates[0].clone()).unwrap_or(f64::NAN);
    for a in &appends {
        println!(
            "  {:>5} B {:<7} {:>12.0} msgs/s {:>9.1} MB/s  x{:.2}",
            a.size,
            policy_name(a.policy),
            a.msgs_per_s,
            mb(a.msgs_per_s * a.size as f64, 1.0),
            a.msgs_per_s / streaming
        );
    }
    println!(
        "replay of {} messages ({:.0} MiB of files) from offset 0:",
        rp.messages,
        rp.file_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "  ringbus replay     {:>12.0} msgs/s {:>9.1} MB/s",
        r_msgs,
        mb(r_msgs * bytes_per_msg, 1.0)
    );
    println!(
        "  std::fs::read      {:>12.0} msgs/s {:>9.1} MB/s   (replay/read ratio {replay_ratio:.2})",
        pc_msgs,
        mb(pc_msgs * bytes_per_msg, 1.0)
    );
    println!("live, 64 B, one-way (send to receive), and streaming:");
    for (i, row) in rows.iter().enumerate() {
        println!(
            "  {:<24} p50 {:>7} ns  p99 {:>8} ns  p99.9 {:>9} ns  {:>10.0} msgs/s  p50 x{:.2}  msgs/s x{:.2}",
            row.name(),
            hists[i].value_at_quantile(0.5),
            hists[i].value_at_quantile(0.99),
            hists[i].value_at_quantile(0.999),
            median(rates[i].clone()).unwrap_or(0.0),
            ratio(&p50s[i], &p50s[0]),
            ratio(&rates[i], &rates[0]),
        );
    }
    println!(
        "rebalance after a member is SIGKILLed ({} trials, detection every {} ms): p50 {reb50:.1} ms, max {rebmax:.1} ms",
        times.len(),
        args.detect_ms
    );
    Ok(())
}
