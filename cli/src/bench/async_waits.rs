//! `ringbus bench async`: what async waits cost while nothing happens, and how fast parked
//! futures wake, one alone and many at once.
//!
//! - **idle**: one process holds one awaiting future of each kind in turn (a subscriber's
//!   `receive_async`, a consumer's, a server's) in a tokio current-thread runtime, with its
//!   peer open and silent in the same process. After a settling second, the process's CPU time
//!   (`CLOCK_PROCESS_CPUTIME_ID`: every thread, user and system) is read across an
//!   `--idle-secs` window (default 10 s). What it spends is the waiter's naps: the liveness
//!   checks each wait keeps (ARCHITECTURE.md, "Async").
//! - **wake**: N futures (default 1000) on N topics, each awaited in its own task of one
//!   current-thread runtime with `spin_before_sleep(0)`, so every one is parked in the waiter.
//!   Once all are parked (each topic's publisher sees its subscriber's doorbell bit), a publisher
//!   thread sends one message to each, stamped with its send time; each task records the time
//!   from its message's send to the end of its await. Beside it, one future on one topic, the
//!   same way. Each is repeated `--rounds` times; p50 / p99 / max over every wake.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::util::{err, positive_usize, Result};
use ringbus::Node;

/// `ringbus bench async --help`: what the command does (above the flags).
pub const LONG_ABOUT: &str = "\
What async waits cost: the CPU time of one process whose only activity is one awaiting
future (a subscriber's, a consumer's, a server's) over an idle window; and the wake latency
of N parked futures on N topics woken by one message each, beside one future alone.";

/// The command line of `ringbus bench async`.
#[derive(clap::Args, Debug)]
pub struct AsyncArgs {
    /// Print exactly one JSON object on stdout
    #[arg(long)]
    json: bool,
    /// Seconds of each idle window (1..=600)
    #[arg(long, value_name = "S", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    idle_secs: u64,
    /// Futures (and topics) woken at once (1..=4096)
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    futures: u64,
    /// Wake rounds of each case
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = positive_usize)]
    rounds: usize,
}

/// How long the publisher waits for the futures of a round to park or complete.
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// A segment name of this run (`bench`'s prefix, so that a killed run's files are recognised).
fn name(what: &str) -> String {
    format!(
        "{}{}-async-{what}",
        super::peer::KEY_PREFIX,
        std::process::id()
    )
}

/// This process's CPU time so far, every thread, user and system.
fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn rt() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(format!("tokio runtime: {e}")))
}

fn e2s(e: impl std::fmt::Display) -> Box<dyn std::error::Error + Send + Sync> {
    err(e.to_string())
}

/// Runs `wait` (a future that ends when `end` is called) in a current-thread runtime on its own
/// thread, and reads the CPU time of the process over `window` once it settled.
fn idle_window<F>(
    window: Duration,
    wait: impl FnOnce() -> F + Send + 'static,
    end: impl FnOnce() -> Result<()>,
) -> Result<Duration>
where
    F: std::future::Future<Output = Result<()>>,
{
    let waiting = std::thread::spawn(move || rt()?.block_on(wait()));
    // A benchmark step, not a test: the settle and the window are what is measured.
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu_time();
    std::thread::sleep(window);
    let used = cpu_time() - before;
    end()?;
    waiting
        .join()
        .map_err(|_| err("the waiting thread panicked"))??;
    Ok(used)
}

/// CPU time over `window` of an idle subscriber, consumer and server, each alone.
fn idle(node: &Node, window: Duration) -> Result<[(&'static str, Duration); 3]> {
    let topic = node.topic::<u64>(&name("idle-topic"));
    let mut publisher = topic.publisher().map_err(e2s)?;
    let mut sub = topic.subscriber().map_err(e2s)?;
    let subscriber = idle_window(
        window,
        move || async move {
            sub.receive_async().await.map_err(e2s)?;
            Ok(())
        },
        || publisher.send_copy(&1).map_err(e2s),
    )?;

    let queue = node.queue::<u64>(&name("idle-queue"));
    let mut producer = queue.producer().map_err(e2s)?;
    let mut con = queue.consumer().map_err(e2s)?;
    let consumer = idle_window(
        window,
        move || async move {
            con.receive_async().await.map_err(e2s)?.ack().map_err(e2s)?;
            Ok(())
        },
        || producer.send(&1).map(drop).map_err(e2s),
    )?;

    let service = node.service::<u64, u64>(&name("idle-service"));
    let client = service.client().map_err(e2s)?;
    let mut srv = service.server().map_err(e2s)?;
    let server = idle_window(
        window,
        move || async move {
            srv.receive_async()
                .await
                .map_err(e2s)?
                .respond(&2)
                .map_err(e2s)?;
            Ok(())
        },
        || client.call(&1).map(drop).map_err(e2s),
    )?;
    Ok([
        ("subscriber", subscriber),
        ("consumer", consumer),
        ("server", server),
    ])
}

/// Wake latencies (ns) of `n` futures on `n` topics over `rounds` rounds (module doc).
fn wake(node: &Node, tag: &str, n: usize, rounds: usize) -> Result<Vec<u64>> {
    let epoch = Instant::now();
    let ns = move || epoch.elapsed().as_nanos() as u64;
    let mut publishers = Vec::with_capacity(n);
    let mut subscribers = Vec::with_capacity(n);
    for i in 0..n {
        let topic = node
            .topic::<u64>(&name(&format!("wake-{tag}-{i}")))
            .capacity(4)
            .max_publishers(1)
            .max_subscribers(1)
            .spin_before_sleep(Duration::ZERO);
        subscribers.push(topic.subscriber().map_err(e2s)?);
        publishers.push(topic.publisher().map_err(e2s)?);
    }
    let done = Arc::new(AtomicUsize::new(0));
    let finished = done.clone();
    let waiting = std::thread::spawn(move || -> Result<Vec<u64>> {
        rt()?.block_on(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for mut s in subscribers {
                let done = finished.clone();
                tasks.spawn(async move {
                    let mut waits = Vec::with_capacity(rounds);
                    for _ in 0..rounds {
                        let stamp = *s.receive_async().await.map_err(e2s)?;
                        waits.push(ns().saturating_sub(stamp));
                        // Relaxed: a progress count the publisher polls; the message itself
                        // was published through the ring.
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(waits)
                });
            }
            let mut all = Vec::with_capacity(n * rounds);
            while let Some(got) = tasks.join_next().await {
                all.extend(got.map_err(e2s)??);
            }
            Ok(all)
        })
    });
    let wait_until = |what: &str, ready: &dyn Fn() -> bool| -> Result<()> {
        let end = Instant::now() + ROUND_TIMEOUT;
        while !ready() {
            if Instant::now() >= end {
                return Err(err(format!("wake round: futures never {what}")));
            }
            std::thread::yield_now();
        }
        Ok(())
    };
    for round in 0..rounds {
        // Relaxed: a progress count (see the tasks).
        wait_until("completed", &|| done.load(Ordering::Relaxed) == round * n)?;
        wait_until("parked", &|| {
            publishers.iter().all(|p| p.has_sleeping_subscriber())
        })?;
        for p in &mut publishers {
            p.send_copy(&ns()).map_err(e2s)?;
        }
    }
    let all = waiting
        .join()
        .map_err(|_| err("the waiting thread panicked"))??;
    if all.len() != n * rounds {
        return Err(err(format!("{} of {} wakes", all.len(), n * rounds)));
    }
    Ok(all)
}

/// (p50, p99, max) of `v`, in ns.
fn percentiles(v: &mut [u64]) -> (u64, u64, u64) {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), v[v.len() - 1])
}

/// Entry point of `ringbus bench async`.
pub fn main(args: &AsyncArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringbus bench async: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &AsyncArgs) -> Result<()> {
    let &AsyncArgs {
        json,
        idle_secs,
        futures,
        rounds,
    } = args;
    let node = Node::new().map_err(e2s)?;
    let steps = 3 + 2;
    let progress = super::progress::Progress::start("ringbus bench async", steps, "steps");
    let window = Duration::from_secs(idle_secs);
    let idle = idle(&node, window)?;
    progress.inc(3);
    let mut one = wake(&node, "one", 1, rounds)?;
    progress.inc(1);
    let mut many = wake(&node, "many", futures as usize, rounds)?;
    progress.inc(1);
    let (o50, o99, omax) = percentiles(&mut one);
    let (m50, m99, mmax) = percentiles(&mut many);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    if json {
        let idle_json: Vec<String> = idle
            .iter()
            .map(|(who, d)| format!("\"{who}\":{:.1}", us(*d)))
            .collect();
        println!(
            "{{\"pattern\":\"async\",\"idle_secs\":{idle_secs},\"idle_cpu_us\":{{{}}},\
             \"rounds\":{rounds},\
             \"wake_one\":{{\"futures\":1,\"p50_ns\":{o50},\"p99_ns\":{o99},\"max_ns\":{omax}}},\
             \"wake_many\":{{\"futures\":{futures},\"p50_ns\":{m50},\"p99_ns\":{m99},\"max_ns\":{mmax}}}}}",
            idle_json.join(",")
        );
    } else {
        println!("ringbus bench async: idle CPU over {idle_secs} s, one awaiting future alone");
        for (who, d) in &idle {
            println!("  {who:<10} {:>9.1} µs", us(*d));
        }
        println!("wake latency (send → await returns), futures parked (spin 0), {rounds} rounds");
        println!(
            "  {:>5} future(s): p50 {o50:>8} ns  p99 {o99:>8} ns  max {omax:>8} ns",
            1
        );
        println!("  {futures:>5} future(s): p50 {m50:>8} ns  p99 {m99:>8} ns  max {mmax:>8} ns");
    }
    Ok(())
}
