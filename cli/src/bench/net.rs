//! `ringbus bench net`: the network adapter beside plain zenoh, in one run.
//!
//! Two "hosts" on this machine: this process (host A) and a child (`ringbus bench-net-peer`,
//! host B), each with its own ringbus roots, talking zenoh over TCP on loopback with explicit
//! endpoints and scouting off. Three candidates, each on a zenoh network of its own:
//! - `zenoh`: the two processes use zenoh directly (a publisher and subscriber per direction,
//!   a queryable): what a user would write instead of ringbus;
//! - `ringbus-zenoh`: each side's application uses ringbus topics and a service; a sidecar
//!   bridge process per host (`ringbus bridge`) carries them;
//! - `ringbus-zenoh-embedded`: the same, with the bridge inside the application process.
//!
//! Figures: pub/sub round trip (A publishes, B publishes it back), rpc round trip (A calls,
//! B serves), and streaming (A sends `--messages` of `--size` bytes, B counts them; msgs/s
//! at A from the first send to B's count coming back). Candidates alternate round by round
//! (this VM's core-to-core latency changes mode every 10–60 s), and each ratio to `zenoh` is
//! the median of the per-round ratios of medians.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringbus::{Bytes, Client, Node, Publisher, ServiceBuilder, Subscriber, TopicBuilder};
use ringbus_zenoh::{Bridge, BridgeConfig};
use serde_json::json;
use zenoh::Wait;

use super::stats::median;
use super::util::{err, Result};

/// `ringbus bench net --help`: what the command does (above the flags).
pub const LONG_ABOUT: &str = "\
Two \"hosts\" on this machine (this process and a child, each with its own RINGBUS_ROOT),
zenoh over TCP on loopback with explicit endpoints and scouting off. Rows: zenoh (the
two processes use zenoh directly), ringbus-zenoh (ringbus apps, a sidecar `ringbus bridge`
per host) and ringbus-zenoh-embedded (the bridge inside each app). Reports pub/sub and rpc
round trips (p50, p99, p99.9) and streaming msgs/s, with each row's ratio to zenoh (median
of per-round ratios: the candidates alternate round by round).";

/// The command line of `ringbus bench net`.
#[derive(clap::Args, Debug)]
pub struct NetArgs {
    /// Print exactly one JSON object on stdout
    #[arg(long)]
    json: bool,
    /// Rounds of each candidate (alternated)
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1000))]
    rounds: u64,
    /// Round trips per latency round
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    trips: u64,
    /// Messages per streaming round
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    messages: u64,
    /// Message size in bytes (at least 16: sequence number and a marker)
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(16..=65536))]
    size: u64,
}

/// The command line of the child (`ringbus bench-net-peer`, hidden).
#[derive(clap::Args, Debug)]
pub struct NetPeerArgs {
    /// The run's directory (roots and configurations, made by the parent)
    #[arg(long)]
    dir: PathBuf,
    /// Message size
    #[arg(long)]
    size: usize,
}

/// The candidates, in report order.
const ROWS: [&str; 3] = ["zenoh", "ringbus-zenoh", "ringbus-zenoh-embedded"];
/// Longest wait for one answer before the run fails (no hang).
const ANSWER: Duration = Duration::from_secs(10);
/// Longest wait for a candidate's routes to come up.
const DISCOVERY: Duration = Duration::from_secs(30);
/// Zenoh keys of the plain-zenoh candidate.
const Z_PING: &str = "bench-net/ping";
const Z_PONG: &str = "bench-net/pong";
const Z_RPC: &str = "bench-net/rpc";
const Z_STREAM: &str = "bench-net/stream";
const Z_DONE: &str = "bench-net/done";

fn topic(node: &Node, name: &str, size: usize) -> TopicBuilder<Bytes> {
    node.topic_bytes(name)
        .max_message_size(size)
        .capacity(1024)
        .send_timeout(Duration::from_secs(10))
}

fn service(node: &Node, size: usize) -> ServiceBuilder<Bytes, Bytes> {
    node.service::<Bytes, Bytes>("echo")
        .max_request_size(size)
        .max_response_size(size)
        .timeout(ANSWER)
}

/// The zenoh configuration of one side of the plain-zenoh candidate.
fn zenoh_config(listen: Option<u16>, connect: Option<u16>) -> Result<zenoh::Config> {
    let mut c = zenoh::Config::default();
    let set = |c: &mut zenoh::Config, k: &str, v: String| {
        c.insert_json5(k, &v)
            .map_err(|e| err(format!("zenoh {k}: {e}")))
    };
    set(&mut c, "mode", "\"peer\"".into())?;
    set(&mut c, "scouting/multicast/enabled", "false".into())?;
    let ep = |p: Option<u16>| match p {
        Some(p) => format!("[\"tcp/127.0.0.1:{p}\"]"),
        None => "[]".into(),
    };
    set(&mut c, "listen/endpoints", ep(listen))?;
    set(&mut c, "connect/endpoints", ep(connect))?;
    Ok(c)
}

fn open_session(c: zenoh::Config) -> Result<zenoh::Session> {
    zenoh::open(c)
        .wait()
        .map_err(|e| err(format!("zenoh: {e}")))
}

/// A bridge configuration (JSON5) for one host of a bridged candidate.
fn bridge_config(host_a: bool, listen: Option<u16>, connect: Option<u16>) -> String {
    let (export, import) = if host_a {
        ("[\"ping\", \"stream\"]", "[\"pong\", \"done\"]")
    } else {
        ("[\"pong\", \"done\"]", "[\"ping\", \"stream\"]")
    };
    let (s_export, s_import) = if host_a {
        ("[]", "[\"echo\"]")
    } else {
        ("[\"echo\"]", "[]")
    };
    let ep = |p: Option<u16>| {
        p.map(|p| format!("\"tcp/127.0.0.1:{p}\""))
            .unwrap_or_default()
    };
    format!(
        "{{ zenoh: {{ listen: [{}], connect: [{}] }}, topics: {{ export: {export}, import: \
         {import} }}, services: {{ export: {s_export}, import: {s_import} }} }}",
        ep(listen),
        ep(connect)
    )
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The sequence number at the start of a message.
fn seq_of(b: &[u8]) -> u64 {
    b.get(..8)
        .map_or(u64::MAX, |s| u64::from_le_bytes(s.try_into().expect("8")))
}

fn message(seq: u64, size: usize) -> Vec<u8> {
    let mut m = vec![0u8; size];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    m
}

/// The end of a stream: a message of 8 bytes (every message of the stream is longer), a
/// token B sends back with its count, so a count that comes back late (a probe's, while the
/// routes were coming up) is never taken for another's.
fn end_marker(token: u64) -> Vec<u8> {
    token.to_le_bytes().to_vec()
}

/// A fresh token for [`end_marker`].
fn next_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    // Relaxed: a unique number; nothing is published with it.
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// B's count of a stream: the count, then the end marker's token.
fn count_reply(count: u64, end: &[u8]) -> Vec<u8> {
    let mut v = count.to_le_bytes().to_vec();
    v.extend_from_slice(end);
    v
}

/// The (count, token) of B's reply.
fn parse_count(b: &[u8]) -> (u64, u64) {
    (seq_of(b), b.get(8..).map_or(0, seq_of))
}

// ---- Host A: the measuring side of each candidate.

/// Host A's side of a candidate.
trait PingSide {
    /// One pub/sub round trip of message `seq`.
    fn pubsub(&mut self, seq: u64, size: usize) -> Result<Duration>;
    /// One call.
    fn rpc(&mut self, seq: u64, size: usize) -> Result<Duration>;
    /// `n` messages, then the end; returns how many B counted and the time until its count
    /// came back.
    fn stream(&mut self, n: u64, size: usize) -> Result<(u64, Duration)>;
    /// An empty stream (only its end), waiting at most `wait` for B's count: whether both
    /// of the stream's routes are up.
    fn stream_probe(&mut self, wait: Duration) -> Result<()>;
    /// Kernel wake-ups A's application publisher made so far (None for zenoh).
    fn wakes(&self) -> Option<u64>;
}

struct ZenohPing {
    _session: zenoh::Session,
    ping: zenoh::pubsub::Publisher<'static>,
    pong: zenoh::pubsub::Subscriber<zenoh::handlers::FifoChannelHandler<zenoh::sample::Sample>>,
    stream: zenoh::pubsub::Publisher<'static>,
    done: zenoh::pubsub::Subscriber<zenoh::handlers::FifoChannelHandler<zenoh::sample::Sample>>,
    session: zenoh::Session,
}

impl ZenohPing {
    fn new(port: u16) -> Result<ZenohPing> {
        let session = open_session(zenoh_config(Some(port), None)?)?;
        let z = |e: zenoh::Error| err(format!("zenoh: {e}"));
        let block = zenoh::qos::CongestionControl::Block;
        Ok(ZenohPing {
            ping: session
                .declare_publisher(Z_PING)
                .congestion_control(block)
                .wait()
                .map_err(z)?,
            pong: session.declare_subscriber(Z_PONG).wait().map_err(z)?,
            stream: session
                .declare_publisher(Z_STREAM)
                .congestion_control(block)
                .wait()
                .map_err(z)?,
            done: session.declare_subscriber(Z_DONE).wait().map_err(z)?,
            _session: session.clone(),
            session,
        })
    }
}

impl ZenohPing {
    /// B's count for the stream ended with `token`, waiting at most `wait`.
    fn count(&mut self, token: u64, wait: Duration) -> Result<u64> {
        let start = Instant::now();
        loop {
            let s = self
                .done
                .recv_timeout(wait.saturating_sub(start.elapsed()))
                .map_err(|e| err(e.to_string()))?
                .ok_or_else(|| err("zenoh: no stream count"))?;
            let (count, t) = parse_count(&s.payload().to_bytes());
            if t == token {
                return Ok(count);
            }
        }
    }
}

impl PingSide for ZenohPing {
    fn pubsub(&mut self, seq: u64, size: usize) -> Result<Duration> {
        let start = Instant::now();
        self.ping
            .put(message(seq, size))
            .wait()
            .map_err(|e| err(e.to_string()))?;
        loop {
            let s = self
                .pong
                .recv_timeout(ANSWER.saturating_sub(start.elapsed()))
                .map_err(|e| err(e.to_string()))?
                .ok_or_else(|| err("zenoh: no pong"))?;
            if seq_of(&s.payload().to_bytes()) == seq {
                return Ok(start.elapsed());
            }
        }
    }

    fn rpc(&mut self, seq: u64, size: usize) -> Result<Duration> {
        let start = Instant::now();
        let replies = self
            .session
            .get(Z_RPC)
            .payload(message(seq, size))
            .timeout(ANSWER)
            .wait()
            .map_err(|e| err(e.to_string()))?;
        let reply = replies.recv().map_err(|_| err("zenoh: no reply"))?;
        let elapsed = start.elapsed();
        let ok = reply
            .result()
            .is_ok_and(|s| seq_of(&s.payload().to_bytes()) == seq);
        if !ok {
            return Err(err("zenoh: a wrong reply"));
        }
        // The query's end (its final message), before the next call.
        while replies.recv().is_ok() {}
        Ok(elapsed)
    }

    fn stream_probe(&mut self, wait: Duration) -> Result<()> {
        let token = next_token();
        self.stream
            .put(end_marker(token))
            .wait()
            .map_err(|e| err(e.to_string()))?;
        self.count(token, wait).map(|_| ())
    }

    fn stream(&mut self, n: u64, size: usize) -> Result<(u64, Duration)> {
        let token = next_token();
        let start = Instant::now();
        for i in 0..n {
            self.stream
                .put(message(i, size))
                .wait()
                .map_err(|e| err(e.to_string()))?;
        }
        self.stream
            .put(end_marker(token))
            .wait()
            .map_err(|e| err(e.to_string()))?;
        Ok((self.count(token, ANSWER * 3)?, start.elapsed()))
    }

    fn wakes(&self) -> Option<u64> {
        None
    }
}

struct RingbusPing {
    ping: Publisher<Bytes>,
    pong: Subscriber<Bytes>,
    client: Client<Bytes, Bytes>,
    stream: Publisher<Bytes>,
    done: Subscriber<Bytes>,
    _bridge: Option<Bridge>,
}

impl RingbusPing {
    fn new(root: &Path, size: usize, bridge: Option<BridgeConfig>) -> Result<RingbusPing> {
        let node = Node::with_root(root)?;
        let bridge = match bridge {
            Some(c) => Some(Bridge::start(&node, c).map_err(|e| err(e.to_string()))?),
            None => None,
        };
        Ok(RingbusPing {
            ping: topic(&node, "ping", size).publisher()?,
            pong: topic(&node, "pong", size).subscriber()?,
            client: service(&node, size).client()?,
            stream: topic(&node, "stream", size).publisher()?,
            done: topic(&node, "done", size).subscriber()?,
            _bridge: bridge,
        })
    }
}

impl RingbusPing {
    /// B's count for the stream ended with `token`, waiting at most `wait`.
    fn count(&mut self, token: u64, wait: Duration) -> Result<u64> {
        let start = Instant::now();
        loop {
            let m = self
                .done
                .receive_timeout(wait.saturating_sub(start.elapsed()))?;
            let (count, t) = parse_count(&m);
            if t == token {
                return Ok(count);
            }
        }
    }
}

impl PingSide for RingbusPing {
    fn pubsub(&mut self, seq: u64, size: usize) -> Result<Duration> {
        let start = Instant::now();
        self.ping.send_copy(&message(seq, size))?;
        loop {
            let m = self
                .pong
                .receive_timeout(ANSWER.saturating_sub(start.elapsed()))?;
            if seq_of(&m) == seq {
                return Ok(start.elapsed());
            }
        }
    }

    fn rpc(&mut self, seq: u64, size: usize) -> Result<Duration> {
        let start = Instant::now();
        let r = self.client.call(&message(seq, size))?;
        let elapsed = start.elapsed();
        if seq_of(&r) != seq {
            return Err(err("ringbus: a wrong response"));
        }
        Ok(elapsed)
    }

    fn stream_probe(&mut self, wait: Duration) -> Result<()> {
        let token = next_token();
        self.stream.send_copy(&end_marker(token))?;
        self.count(token, wait).map(|_| ())
    }

    fn stream(&mut self, n: u64, size: usize) -> Result<(u64, Duration)> {
        let token = next_token();
        let start = Instant::now();
        for i in 0..n {
            self.stream.send_copy(&message(i, size))?;
        }
        self.stream.send_copy(&end_marker(token))?;
        Ok((self.count(token, ANSWER * 3)?, start.elapsed()))
    }

    fn wakes(&self) -> Option<u64> {
        Some(self.ping.wake_calls())
    }
}

// ---- Host B: the answering side (the child process).

/// Runs host B until its stdin closes: the plain-zenoh answers, and the ringbus apps of the
/// two bridged candidates (the embedded one with its bridge).
pub fn peer_main(args: &NetPeerArgs) -> ExitCode {
    match peer(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringbus bench-net-peer: {e}");
            ExitCode::from(1)
        }
    }
}

fn read_port(dir: &Path, name: &str) -> Result<u16> {
    std::fs::read_to_string(dir.join(name))?
        .trim()
        .parse()
        .map_err(|_| err(format!("bad port file {name}")))
}

fn peer(args: &NetPeerArgs) -> Result<()> {
    let size = args.size;
    let stop = Arc::new(AtomicBool::new(false));
    // Plain zenoh: answers in zenoh's callbacks.
    let session = open_session(zenoh_config(
        None,
        Some(read_port(&args.dir, "zenoh.port")?),
    )?)?;
    let z = |e: zenoh::Error| err(format!("zenoh: {e}"));
    let block = zenoh::qos::CongestionControl::Block;
    let pong = session
        .declare_publisher(Z_PONG)
        .congestion_control(block)
        .wait()
        .map_err(z)?;
    let _ping = session
        .declare_subscriber(Z_PING)
        .callback(move |s| {
            let _ = pong.put(s.payload().clone()).wait();
        })
        .wait()
        .map_err(z)?;
    let _rpc = session
        .declare_queryable(Z_RPC)
        .callback(|q| {
            let payload = q.payload().cloned().unwrap_or_default();
            let _ = q.reply(q.key_expr().clone(), payload).wait();
        })
        .wait()
        .map_err(z)?;
    let done = session
        .declare_publisher(Z_DONE)
        .congestion_control(block)
        .wait()
        .map_err(z)?;
    let counted = AtomicU64::new(0);
    let _stream = session
        .declare_subscriber(Z_STREAM)
        .callback(move |s| {
            if s.payload().len() == 8 {
                // Relaxed: only this callback (one link, one thread at a time) touches it.
                let n = counted.swap(0, Ordering::Relaxed);
                let _ = done.put(count_reply(n, &s.payload().to_bytes())).wait();
            } else {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        })
        .wait()
        .map_err(z)?;

    // The ringbus apps of the two bridged candidates.
    let mut threads = Vec::new();
    let mut bridges = Vec::new();
    for (root, embedded) in [("b-sidecar", false), ("b-embedded", true)] {
        let node = Node::with_root(args.dir.join(root))?;
        if embedded {
            let text = std::fs::read_to_string(args.dir.join("b-embedded.json5"))?;
            let config = BridgeConfig::from_json5(&text).map_err(|e| err(e.to_string()))?;
            bridges.push(Bridge::start(&node, config).map_err(|e| err(e.to_string()))?);
        }
        threads.extend(echo_apps(&node, size, &stop)?);
    }
    println!("ready");
    std::io::stdout().flush()?;
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
        line.clear();
    }
    // Relaxed: the joins below order the rest.
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    drop(bridges);
    let _ = session.close().wait();
    Ok(())
}

/// Host B's ringbus app: `ping` published back on `pong`, `echo` served, `stream` counted.
fn echo_apps(
    node: &Node,
    size: usize,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<std::thread::JoinHandle<()>>> {
    const POLL: Duration = Duration::from_millis(100);
    let ping = topic(node, "ping", size).subscriber()?;
    let mut pong = topic(node, "pong", size).publisher()?;
    let server = service(node, size).server()?;
    let stream = topic(node, "stream", size).subscriber()?;
    let mut done = topic(node, "done", size).publisher()?;
    let (s1, s2, s3) = (stop.clone(), stop.clone(), stop.clone());
    // Relaxed loads below: a stop request; the parent joins these threads.
    Ok(vec![
        std::thread::spawn(move || {
            while !s1.load(Ordering::Relaxed) {
                if let Ok(m) = ping.receive_timeout(POLL) {
                    let _ = pong.send_copy(&m);
                }
            }
        }),
        std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                if let Ok(req) = server.receive_timeout(POLL) {
                    let answer = req.to_vec();
                    let _ = req.respond(&answer);
                }
            }
        }),
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !s3.load(Ordering::Relaxed) {
                if let Ok(m) = stream.receive_timeout(POLL) {
                    if m.len() == 8 {
                        let _ = done.send_copy(&count_reply(std::mem::take(&mut n), &m));
                    } else {
                        n += 1;
                    }
                }
            }
        }),
    ])
}

// ---- The run.

/// Child processes of the run, killed and reaped when it ends (however it ends).
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // The peer ends when its stdin closes; bridges on SIGTERM: both by a kill here.
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(c),
                rustix::process::Signal::TERM,
            );
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// A run directory removed at the end.
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `ringbus bench net`.
pub fn main(args: &NetArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringbus bench net: {e}");
            ExitCode::from(1)
        }
    }
}

/// Repeats `op` until it succeeds (the candidate's routes are up) or `DISCOVERY` passes.
fn until_up<T>(what: &str, mut op: impl FnMut() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        match op() {
            Ok(t) => return Ok(t),
            Err(e) if start.elapsed() > DISCOVERY => {
                return Err(err(format!("{what}: not up after {DISCOVERY:?}: {e}")))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Per candidate: the latency histograms and per-round medians, the stream rates.
#[derive(Default)]
struct Row {
    pubsub: Option<Histogram<u64>>,
    rpc: Option<Histogram<u64>>,
    pubsub_rounds: Vec<f64>,
    rpc_rounds: Vec<f64>,
    stream_rates: Vec<f64>,
    lost: u64,
    wakes_per_trip: Option<f64>,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

fn round_median(samples: &mut [u64]) -> f64 {
    samples.sort_unstable();
    samples[samples.len() / 2] as f64
}

fn run(args: &NetArgs) -> Result<()> {
    let size = args.size as usize;
    let dir =
        RunDir(std::env::temp_dir().join(format!("ringbus-bench-net-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    let d = &dir.0;
    let exe = std::env::current_exe()?;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_>>()?;
    let (zp, sp, ep) = (ports[0], ports[1], ports[2]);
    std::fs::write(d.join("zenoh.port"), zp.to_string())?;
    std::fs::write(
        d.join("a-sidecar.json5"),
        bridge_config(true, Some(sp), None),
    )?;
    std::fs::write(
        d.join("b-sidecar.json5"),
        bridge_config(false, None, Some(sp)),
    )?;
    std::fs::write(
        d.join("b-embedded.json5"),
        bridge_config(false, None, Some(ep)),
    )?;

    // Host A's zenoh listens first; then the sidecars and the peer connect.
    let mut zenoh_ping = ZenohPing::new(zp)?;
    let mut children = Children(Vec::new());
    for host in ["a-sidecar", "b-sidecar"] {
        std::fs::create_dir_all(d.join(host))?;
        children.0.push(
            Command::new(&exe)
                .arg("bridge")
                .arg("--root")
                .arg(d.join(host))
                .arg("--config")
                .arg(d.join(format!("{host}.json5")))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    let a_embedded = BridgeConfig::from_json5(&bridge_config(true, Some(ep), None))
        .map_err(|e| err(e.to_string()))?;
    let mut sidecar_ping = RingbusPing::new(&d.join("a-sidecar"), size, None)?;
    let mut embedded_ping = RingbusPing::new(&d.join("a-embedded"), size, Some(a_embedded))?;
    let mut peer = Command::new(&exe)
        .arg("bench-net-peer")
        .arg("--dir")
        .arg(d)
        .arg("--size")
        .arg(size.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = BufReader::new(peer.stdout.take().expect("piped"));
    let _peer_stdin = peer.stdin.take();
    children.0.push(peer);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if line.trim() != "ready" {
        return Err(err("the peer process did not start"));
    }

    let mut sides: [(&str, &mut dyn PingSide); 3] = [
        (ROWS[0], &mut zenoh_ping),
        (ROWS[1], &mut sidecar_ping),
        (ROWS[2], &mut embedded_ping),
    ];
    let mut seq = 0u64;
    for (name, side) in sides.iter_mut() {
        until_up(&format!("{name} pub/sub"), || {
            seq += 1;
            side.pubsub(seq, size)
        })?;
        until_up(&format!("{name} rpc"), || {
            seq += 1;
            side.rpc(seq, size)
        })?;
        // The stream's two routes (out, and the count back), then a first stream that warms
        // their buffers.
        until_up(&format!("{name} stream"), || {
            side.stream_probe(Duration::from_millis(500))
        })?;
        side.stream(args.messages.min(1000), size)?;
    }
    let mut rows: Vec<Row> = (0..3).map(|_| Row::default()).collect();
    for round in 0..args.rounds {
        if !args.json {
            eprint!("\rround {}/{}", round + 1, args.rounds);
        }
        for (i, (_, side)) in sides.iter_mut().enumerate() {
            let row = &mut rows[i];
            let wakes0 = side.wakes();
            let (mut ps, mut rs) = (Vec::new(), Vec::new());
            for _ in 0..args.trips {
                seq += 1;
                ps.push(side.pubsub(seq, size)?.as_nanos() as u64);
            }
            if let (Some(w0), Some(w1)) = (wakes0, side.wakes()) {
                row.wakes_per_trip = Some((w1 - w0) as f64 / args.trips as f64);
            }
            for _ in 0..args.trips {
                seq += 1;
                rs.push(side.rpc(seq, size)?.as_nanos() as u64);
            }
            let h = row.pubsub.get_or_insert_with(hist);
            ps.iter().for_each(|&v| h.saturating_record(v));
            let h = row.rpc.get_or_insert_with(hist);
            rs.iter().for_each(|&v| h.saturating_record(v));
            row.pubsub_rounds.push(round_median(&mut ps));
            row.rpc_rounds.push(round_median(&mut rs));
            let (got, took) = side.stream(args.messages, size)?;
            row.lost += args.messages.saturating_sub(got);
            row.stream_rates.push(got as f64 / took.as_secs_f64());
        }
    }
    if !args.json {
        eprintln!();
    }
    report(args, &rows);
    Ok(())
}

/// Median over rounds of `row`'s figure divided by zenoh's in the same round.
fn ratio(of: &[f64], zenoh: &[f64]) -> Option<f64> {
    median(of.iter().zip(zenoh).map(|(a, z)| a / z).collect())
}

fn report(args: &NetArgs, rows: &[Row]) {
    let pct = |h: &Option<Histogram<u64>>, q: f64| h.as_ref().map(|h| h.value_at_quantile(q));
    let z = &rows[0];
    let mut json_rows = Vec::new();
    let mut table = vec![format!(
        "{:<24} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>7} {:>11} {:>7} {:>6}",
        "", "pubsub", "p99", "p99.9", "x", "rpc", "p99", "p99.9", "x", "stream/s", "x", "wakes"
    )];
    let us = |v: Option<u64>| v.map_or("-".into(), |v| format!("{:.1}us", v as f64 / 1000.0));
    let x = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    for (name, row) in ROWS.iter().zip(rows) {
        let ps_ratio = ratio(&row.pubsub_rounds, &z.pubsub_rounds);
        let rpc_ratio = ratio(&row.rpc_rounds, &z.rpc_rounds);
        let stream_ratio = ratio(&row.stream_rates, &z.stream_rates);
        let rate = median(row.stream_rates.clone());
        json_rows.push(json!({
            "transport": name,
            "pubsub_rtt_ns": {"p50": pct(&row.pubsub, 0.5), "p99": pct(&row.pubsub, 0.99), "p99_9": pct(&row.pubsub, 0.999)},
            "rpc_rtt_ns": {"p50": pct(&row.rpc, 0.5), "p99": pct(&row.rpc, 0.99), "p99_9": pct(&row.rpc, 0.999)},
            "stream_msgs_per_s": rate,
            "stream_lost": row.lost,
            "pubsub_ratio_to_zenoh": ps_ratio,
            "rpc_ratio_to_zenoh": rpc_ratio,
            "stream_ratio_to_zenoh": stream_ratio,
            "app_wakes_per_pubsub_trip": row.wakes_per_trip,
        }));
        table.push(format!(
            "{:<24} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>7} {:>11} {:>7} {:>6}",
            name,
            us(pct(&row.pubsub, 0.5)),
            us(pct(&row.pubsub, 0.99)),
            us(pct(&row.pubsub, 0.999)),
            x(ps_ratio),
            us(pct(&row.rpc, 0.5)),
            us(pct(&row.rpc, 0.99)),
            us(pct(&row.rpc, 0.999)),
            x(rpc_ratio),
            rate.map_or("-".into(), |r| format!("{r:.0}")),
            x(stream_ratio),
            row.wakes_per_trip.map_or("-".into(), |w| format!("{w:.2}")),
        ));
    }
    if args.json {
        println!(
            "{}",
            json!({
                "pattern": "net",
                "size": args.size,
                "rounds": args.rounds,
                "trips": args.trips,
                "messages": args.messages,
                "rows": json_rows,
            })
        );
    } else {
        println!(
            "net: {} B messages, {} rounds x {} round trips, {} streamed per round",
            args.size, args.rounds, args.trips, args.messages
        );
        for l in table {
            println!("{l}");
        }
        println!("(round trips; x: median per-round ratio to zenoh; wakes: futex wakes A's app publisher made per pub/sub round trip)");
    }
}
