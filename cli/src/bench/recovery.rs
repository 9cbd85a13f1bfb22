//! `ringbus bench recovery`: how long opening a durable queue takes when it must recover
//! (every participant gone) while it holds many messages (default 1,000,000 of 64 bytes).
//!
//! In one process: a producer fills a durable queue (`SyncPolicy::Never`, in a fresh
//! directory on disk) and is dropped, so nobody is registered. Then, timed:
//! - `same_boot`: opening a consumer runs the same-boot recovery (every waiting record's
//!   checksum is checked);
//! - `after_restart`: the ring file's boot word is changed, as a machine restart would leave
//!   it, and opening a consumer rebuilds the ring from the log (every record read).
//!
//! Each is run `--rounds` times (default 3) and reported as min / median / max, with the
//! count of messages the recovery found (it must be all of them). The page cache is warm
//! (the records were just written) unless `--cold` drops it before each timed open, as a
//! restart would: then the log is read from disk.

use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::queue::DiskDir;
use super::util::{err, positive_usize, Result};
use ringbus::{queue::Policy, Node, SyncPolicy};

/// `ringbus bench recovery --help`: what the command does (above the flags).
pub const LONG_ABOUT: &str = "\
Opens a durable queue holding N messages of 64 bytes (default 1000000) after every
participant is gone, timed: same-boot recovery (checksums of every waiting record), and
the rebuild after a machine restart (ring rebuilt from the log).";

/// The command line of `ringbus bench recovery`.
#[derive(clap::Args, Debug)]
pub struct RecoveryArgs {
    /// Print exactly one JSON object on stdout
    #[arg(long)]
    json: bool,
    /// Messages of 64 bytes the queue holds (1..=16777216)
    #[arg(long, value_name = "N", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=1 << 24))]
    messages: u64,
    /// Timed opens of each kind (min / median / max are reported)
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = positive_usize)]
    rounds: usize,
    /// Before each timed open, write everything back and drop the page cache (as after
    /// a restart; needs root to write /proc/sys/vm/drop_caches)
    #[arg(long)]
    cold: bool,
}

/// Byte offset of the ring file's boot word (ARCHITECTURE.md, \"Queue segment\").
const BOOT_WORD: u64 = 256 + 304;

struct Figures {
    same_boot: Vec<Duration>,
    after_restart: Vec<Duration>,
    recovered: u64,
    disk_bytes: u64,
}

fn fill(dir: &std::path::Path, messages: u64) -> Result<()> {
    let node = Node::in_process();
    let q = queue(&node, dir, messages);
    let mut p = q.producer().map_err(|e| err(e.to_string()))?;
    let mut m = [0u8; 64];
    for i in 0..messages {
        m[..8].copy_from_slice(&i.to_le_bytes());
        p.send(&m).map_err(|e| err(e.to_string()))?;
    }
    Ok(())
}

fn queue(node: &Node, dir: &std::path::Path, messages: u64) -> ringbus::QueueBuilder<[u8; 64]> {
    node.queue::<[u8; 64]>("recovery")
        .capacity((messages as usize).next_power_of_two().max(2))
        .durable(dir)
        .sync_policy(SyncPolicy::Never)
        .policy(Policy::Fail)
}

fn drop_caches() -> Result<()> {
    rustix::fs::sync();
    std::fs::write("/proc/sys/vm/drop_caches", b"3")
        .map_err(|e| err(format!("--cold: cannot drop the page cache: {e}")))
}

fn open_timed(dir: &std::path::Path, messages: u64, cold: bool) -> Result<(Duration, u64)> {
    if cold {
        drop_caches()?;
    }
    let node = Node::in_process();
    let q = queue(&node, dir, messages);
    let t = Instant::now();
    let c = q.consumer().map_err(|e| err(e.to_string()))?;
    let took = t.elapsed();
    Ok((took, c.stats().recovered))
}

fn measure(messages: u64, rounds: usize, cold: bool) -> Result<Figures> {
    let disk = DiskDir::create(&format!("rb-bench-{}-recovery", std::process::id()))?;
    let dir = disk.path().to_path_buf();
    // Steps: the fill, then two timed opens per round (updated between them only).
    let progress =
        super::progress::Progress::start("ringbus bench recovery", 1 + 2 * rounds as u64, "steps");
    fill(&dir, messages)?;
    progress.inc(1);
    let disk_bytes = std::fs::read_dir(dir.join("queue_recovery.log"))
        .map_err(|e| err(e.to_string()))?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let mut f = Figures {
        same_boot: Vec::new(),
        after_restart: Vec::new(),
        recovered: 0,
        disk_bytes,
    };
    let ring = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("queue_recovery"))
        .map_err(|e| err(e.to_string()))?;
    for _ in 0..rounds {
        let (t, n) = open_timed(&dir, messages, cold)?;
        progress.inc(1);
        f.same_boot.push(t);
        f.recovered = n;
        if n != messages {
            return Err(err(format!("same-boot recovery found {n} of {messages}")));
        }
        ring.write_all_at(&0x5a5a_5a5a_5a5a_5a5au64.to_le_bytes(), BOOT_WORD)
            .map_err(|e| err(e.to_string()))?;
        let (t, n) = open_timed(&dir, messages, cold)?;
        progress.inc(1);
        f.after_restart.push(t);
        if n != messages {
            return Err(err(format!(
                "rebuild after a restart found {n} of {messages}"
            )));
        }
    }
    Ok(f)
}

fn stats(v: &mut [Duration]) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[0]), ms(v[v.len() / 2]), ms(v[v.len() - 1]))
}

/// Entry point of `ringbus bench recovery`.
pub fn main(args: &RecoveryArgs) -> ExitCode {
    let &RecoveryArgs {
        json,
        messages,
        rounds,
        cold,
    } = args;
    let mut f = match measure(messages, rounds, cold) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ringbus bench recovery: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (s_min, s_med, s_max) = stats(&mut f.same_boot);
    let (r_min, r_med, r_max) = stats(&mut f.after_restart);
    if json {
        println!(
            "{{\"pattern\":\"recovery\",\"messages\":{messages},\"message_bytes\":64,\
             \"rounds\":{rounds},\"cold_cache\":{cold},\"recovered\":{},\"log_bytes\":{},\
             \"same_boot_ms\":{{\"min\":{s_min:.1},\"median\":{s_med:.1},\"max\":{s_max:.1}}},\
             \"after_restart_ms\":{{\"min\":{r_min:.1},\"median\":{r_med:.1},\"max\":{r_max:.1}}}}}",
            f.recovered, f.disk_bytes
        );
    } else {
        println!(
            "ringbus bench recovery: durable queue holding {messages} messages of 64 B \
             ({:.0} MiB of log), {rounds} rounds, {} page cache",
            f.disk_bytes as f64 / (1 << 20) as f64,
            if cold {
                "cold (dropped before each open)"
            } else {
                "warm"
            }
        );
        println!("  open with same-boot recovery:  min {s_min:.1} ms, median {s_med:.1} ms, max {s_max:.1} ms ({} messages found)", f.recovered);
        println!("  open after a restart (rebuild): min {r_min:.1} ms, median {r_med:.1} ms, max {r_max:.1} ms");
    }
    ExitCode::SUCCESS
}
