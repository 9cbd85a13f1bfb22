//! `ringbus bench`: same-run latency and throughput comparison of ringbus against
//! reference transports between two processes.
//!
//! The parent process is "ping"; it spawns one long-lived child (`bench-peer`, see
//! [`peer`]) that is "pong" for every transport. Latency is measured in short rounds,
//! cycle after cycle; each cycle visits every payload size in turn and, for each size,
//! runs the floor first and then the other transports in an order rotated by one place
//! per cycle (floor, A, B, C for 8 B, floor, A, B, C for 64 B, …; next cycle floor, B, C,
//! A, …). The machine may switch between latency regimes every few seconds, and a round
//! is shifted by what ran before it, so every row gets rounds spread over the whole
//! phase, close in time to the rows of other sizes. The ends of all sizes stay alive
//! through the latency phase; each round trip is recorded in an HDR histogram. Then
//! streaming rounds measure throughput, size by size.
//!
//! Patterns ([`transport::Pattern`]):
//!
//! * `pubsub`: ping publishes the payload, pong publishes it back. Latency is reported
//!   one-way (round trip / 2). Streaming is one-directional: ping sends, pong counts
//!   msgs/s.
//! * `rpc`: ping is the client, pong the server; a request carries the payload, the
//!   response 8 bytes (the request's sequence number, checked by the client). Latency is
//!   the full round trip (not halved). Streaming means pipelined calls: the client keeps
//!   [`transport::RPC_WINDOW`] calls in flight and counts calls/s itself (the
//!   [`transport::PingEnd::stream_send`] outcome), the server just answers. Each row also
//!   gets `pipelined_x_rtt` = calls/s x the round-trip p50 measured in the same round.
//!
//! * `queue`: producers and competing consumers, each in its own process (four children
//!   at once), beside `crossbeam`'s `ArrayQueue` between threads: msgs/s and paced
//!   one-way latency from `CLOCK_MONOTONIC` stamps, for 1→1 and 2→2. Its roles, rounds
//!   and transports differ from ping/pong, so it has its own orchestration ([`queue`]);
//!   it shares the child process (`queue` lines of the [`peer`] protocol), statistics
//!   and reports.
//!
//! Adding a ping/pong pattern: extend [`transport::Pattern`], let transports say what
//! they support via [`transport::Transport::supports`], and implement the new exchange in
//! their ends; the child protocol, orchestration and reports are shared.

pub mod async_waits;
pub mod crossbeam;
pub mod durable;
pub mod floor;
pub mod futex;
#[cfg(feature = "peers")]
pub mod iceoryx2;
pub mod net;
pub mod peer;
pub mod plot;
pub mod process;
pub mod progress;
pub mod queue;
pub mod recovery;
pub mod report;
pub mod ringbus;
pub mod stats;
pub mod tokio_uds;
pub mod torture;
pub mod transport;
pub mod uds;
pub mod util;

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::time::Instant;

use stats::{LatencyRecord, Row};
use transport::{LatencyRound, Mode, Pattern, PingEnd, Placement, Setup, Transport};
use util::{allowed_cpus, err, pin_current_thread, positive, Result, HEADER_BYTES};

pub use peer::{peer_main, PeerArgs};

/// Ring / channel capacity used by every streaming transport.
pub const STREAM_CAPACITY: usize = 8;

const DEFAULT_SIZES: &[usize] = &[8, 64, 1024, 65536, 1_048_576];
const DEFAULT_ROUNDS: usize = 80;
const DEFAULT_MSGS: u64 = 500;
/// Messages per streaming round (payloads up to 1 KiB) per latency round trip: 200 x 500
/// makes the default streaming rounds 100,000 messages (a few ms for shared memory, long enough
/// that a round is not one scheduler hiccup).
const STREAM_FACTOR: u64 = 200;
/// Streaming rounds per payload size (fewer if `--rounds` is smaller); msgs/s is their median.
const STREAM_ROUNDS: usize = 7;

/// `ringbus bench --help`: what the command does (above the flags).
pub const LONG_ABOUT: &str = "\
Same-run latency and throughput comparison of ringbus against reference transports
between two processes (ping and pong).

  ringbus bench [pubsub|rpc|queue] [--json] [--touch] [--rounds N] [--msgs N]
                [--sizes 8,64,1024,65536,1048576] [--transports a,b,..] [--no-pin]
                [--plot DIR]
  ringbus bench recovery [--json] [--messages N] [--rounds N] [--cold]
  ringbus bench async [--json] [--idle-secs S] [--futures N] [--rounds N]";

/// `ringbus bench --help`: how to read the figures (below the flags).
pub const AFTER_LONG_HELP: &str = "\
pubsub: latency numbers are one-way (round trip / 2) in ns: p50, p99, p99.9, max over
all rounds; msgs/s is the median over streaming rounds (counted by the receiver).
rpc: latency numbers are full round trips (request out, response back) in ns; calls/s
is the median over pipelined rounds (16 calls in flight, counted by the client);
\"x rtt\" (JSON pipelined_x_rtt) is the median over streaming rounds of calls/s x the round-trip
p50 of call-after-call calls made in the same round just before the pipelined ones.
Both: \"x floor\" is the median over rounds of the round's p50 divided by the floor's
p50 of the same size in the same cycle.

queue: producers send, consumers receive and ack every message; ringbus rows run each
producer and consumer in its own process, crossbeam (crossbeam-queue's ArrayQueue) in
threads of this process. Rows per size and shape (1->1, 2->2). Transports: crossbeam,
ringbus, ringbus-durable-never, ringbus-durable-batch (10 ms), ringbus-durable-always
(durable queues in a fresh directory on disk, removed afterwards; RINGBUS_BENCH_DISK_DIR
overrides the temp directory). Defaults: --rounds 7, --sizes 64,1024 (at least 24);
--msgs N: paced latency messages per producer and round (each sent once the previous
one is acked; at most 60 ms), streaming rounds send 1000x as many in all (at most 150 ms
per round; --touch is not supported). Latency is one-way, send to receive, from
CLOCK_MONOTONIC stamps in the payload; msgs/s is the median over rounds; \"x ref\"
(JSON ratio_msgs_per_s, ratio_reference) is the median over rounds of msgs/s divided by
the reference row's msgs/s in the same round.";

/// The command line of `ringbus bench` (the ping/pong and queue patterns; `recovery` is
/// its own subcommand). [`BenchArgs::options`] checks what clap cannot (transport names
/// per pattern, `--touch` with `queue`) and fills the pattern's defaults.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Messaging pattern under test (default: pubsub); it may follow the flags
    #[arg(value_enum, value_name = "PATTERN")]
    pattern: Option<Pattern>,
    /// Print exactly one JSON object on stdout
    #[arg(long)]
    json: bool,
    /// Also measure rows where the sender writes and the receiver reads every payload
    /// byte (transport name suffix "+touch")
    #[arg(long)]
    touch: bool,
    /// Latency cycles, i.e. rounds per payload size and transport (default 80; each
    /// cycle runs all sizes; streaming uses min(N, 7) rounds per size)
    #[arg(long, value_name = "N", value_parser = util::positive_usize)]
    rounds: Option<usize>,
    /// Round trips per latency round for payloads up to 4 KiB (default 500; scaled down
    /// for larger payloads, to at least 50), preceded by 10% more (at most 100)
    /// unrecorded warm-up ones; streaming rounds send 200x as many
    #[arg(long, value_name = "N", value_parser = positive)]
    msgs: Option<u64>,
    /// Payload sizes in bytes, each at least 8 (default 8,64,1024,65536,1048576)
    #[arg(long, value_name = "L", value_delimiter = ',', value_parser = payload_size)]
    sizes: Option<Vec<usize>>,
    /// floor,uds,tokio-uds,futex,iceoryx2,ringbus,ringbus-async,ringbus-async-parked,
    /// ringbus-blocking,crossbeam (default all; floor is always measured: it is the reference
    /// for the ratio; tokio-uds is the uds exchange through tokio's async UnixStream, a
    /// current-thread runtime per end; ringbus-async awaits in such a runtime per end
    /// (receive_async; rpc: Server::receive_async and awaited calls); ringbus-async-parked
    /// is the same with spin_before_sleep(0) on every handle (both sides truly parked);
    /// futex is a raw futex ping-pong, the kernel-wake floor, latency only; crossbeam is
    /// in-process pubsub streaming only)
    #[arg(long, value_name = "L", value_delimiter = ',')]
    transports: Option<Vec<String>>,
    /// Do not pin ping and pong to separate CPUs (queue: the workers)
    #[arg(long)]
    no_pin: bool,
    /// Also draw the figures into DIR (created if missing), as SVG and PNG: per payload
    /// size, latency by percentile (p50 .. p99.99, one line per transport) and msgs/s per
    /// transport
    #[arg(long, value_name = "DIR")]
    plot: Option<std::path::PathBuf>,
}

/// A `--sizes` entry: a positive payload size that holds the header word.
fn payload_size(s: &str) -> std::result::Result<usize, String> {
    let n = util::positive_usize(s)?;
    if n < HEADER_BYTES {
        return Err(format!(
            "payload size {n} is smaller than the {HEADER_BYTES}-byte header"
        ));
    }
    Ok(n)
}

/// Parsed `bench` options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Pattern under test.
    pub pattern: Pattern,
    /// JSON output instead of the table.
    pub json: bool,
    /// Also measure touch rows.
    pub touch: bool,
    /// Latency rounds per size.
    pub rounds: usize,
    /// Round trips per latency round (small payloads).
    pub msgs: u64,
    /// Payload sizes.
    pub sizes: Vec<usize>,
    /// Selected transport names (None: all).
    pub transports: Option<Vec<String>>,
    /// Pin ping and pong to separate CPUs.
    pub pin: bool,
    /// Directory for the charts (`--plot`).
    pub plot: Option<std::path::PathBuf>,
}

impl BenchArgs {
    /// The options of the run, or (as text) why this command line is unusable.
    pub fn options(self) -> std::result::Result<Options, String> {
        let pattern = self.pattern.unwrap_or(Pattern::PubSub);
        let transports = self.transports.map(|names| {
            names
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        });
        let known = match pattern {
            Pattern::Queue => queue::TRANSPORTS,
            Pattern::PubSub | Pattern::Rpc => transport::KNOWN_TRANSPORTS,
        };
        if let Some(bad) = transports
            .iter()
            .flatten()
            .find(|n| !known.contains(&n.as_str()))
        {
            return Err(format!("unknown {} transport `{bad}`", pattern.as_str()));
        }
        let (rounds, sizes) = match pattern {
            Pattern::Queue => {
                if self.touch {
                    return Err("--touch is not supported for queue".into());
                }
                (queue::DEFAULT_ROUNDS, queue::DEFAULT_SIZES)
            }
            Pattern::PubSub | Pattern::Rpc => (DEFAULT_ROUNDS, DEFAULT_SIZES),
        };
        Ok(Options {
            pattern,
            json: self.json,
            touch: self.touch,
            rounds: self.rounds.unwrap_or(rounds),
            msgs: self.msgs.unwrap_or(DEFAULT_MSGS),
            sizes: self.sizes.unwrap_or_else(|| sizes.to_vec()),
            transports,
            pin: !self.no_pin,
            plot: self.plot,
        })
    }
}

/// Entry point of the `bench` subcommand (the ping/pong and queue patterns).
pub fn bench_main(opts: &Options) -> ExitCode {
    let t0 = Instant::now();
    // Before the run pins this thread: the machine's CPUs, not the pinned one.
    let plot_settings = opts
        .plot
        .as_ref()
        .map(|_| plot::Settings::of(opts, opts.pin && allowed_cpus().len() >= 2));
    match run(opts) {
        Ok(rows) => {
            if opts.json {
                println!("{}", report::json(opts.pattern, &rows));
            } else {
                let rounds = match opts.pattern {
                    Pattern::Queue => "rounds (each: one streaming and one latency round per row)",
                    Pattern::PubSub | Pattern::Rpc => "latency rounds per size",
                };
                let note = format!(
                    "{} {rounds}; took {:.1} s",
                    opts.rounds,
                    t0.elapsed().as_secs_f64()
                );
                print!("{}", report::table(opts.pattern, &rows, &note));
            }
            match (&opts.plot, &plot_settings) {
                (Some(dir), Some(settings)) => plot_main(opts.pattern, dir, settings, &rows),
                _ => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("ringbus bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Draws the charts of `--plot DIR` (after the figures are printed: a failure here loses
/// nothing but the charts).
fn plot_main(
    pattern: Pattern,
    dir: &std::path::Path,
    settings: &plot::Settings,
    rows: &[Row],
) -> ExitCode {
    match plot::write(dir, pattern, settings, rows) {
        Ok(files) => {
            eprintln!(
                "ringbus bench: {} charts (SVG and PNG) written to {}",
                files.len() / 2,
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringbus bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Round trips per latency round for a payload size.
fn latency_count(msgs: u64, payload: usize) -> u64 {
    if payload <= 4096 {
        msgs
    } else {
        (msgs * 4096 / payload as u64).max(50)
    }
}

/// Unrecorded round trips at the start of each latency round.
fn warmup_count(count: u64) -> u64 {
    (count / 10).min(100)
}

/// Messages per streaming round for a payload size.
fn stream_count(msgs: u64, payload: usize) -> u64 {
    (msgs * STREAM_FACTOR * 1024 / payload.max(1024) as u64).max(64)
}

/// One measured row in the making: a transport, touched or not.
struct Variant<'a> {
    transport: &'a dyn Transport,
    touch: bool,
}

impl Variant<'_> {
    fn label(&self) -> String {
        if self.touch {
            format!("{}+touch", self.transport.name())
        } else {
            self.transport.name().to_string()
        }
    }
}

/// Everything that stays fixed over the run.
struct Ctx<'a> {
    opts: &'a Options,
    key: String,
    dir: std::path::PathBuf,
    /// CPU for the in-process streaming receiver thread.
    local_receiver_cpu: Option<usize>,
    /// Notes already printed (a failing set-up is reported once, not once per size).
    noted: RefCell<HashSet<String>>,
}

impl Ctx<'_> {
    fn setup(&self, mode: Mode, payload: usize) -> Setup {
        Setup {
            pattern: self.opts.pattern,
            mode,
            payload,
            key: self.key.clone(),
            dir: self.dir.clone(),
        }
    }
}

fn note(msg: &str) {
    progress::note(&format!("ringbus bench: note: {msg}"));
}

impl Ctx<'_> {
    /// Reports that `name` could not be set up (once per distinct reason).
    fn omitted(&self, name: &str, setup: &Setup, reason: &str) {
        let msg = format!("{name} omitted ({} rounds): {reason}", setup.mode);
        if self.noted.borrow_mut().insert(msg.clone()) {
            note(&format!("{msg} [first at {} B]", setup.payload));
        }
    }
}

fn run(opts: &Options) -> Result<Vec<Row>> {
    if opts.pattern == Pattern::Queue {
        return queue::run(opts);
    }
    let all = transport::registry();
    let wanted = |name: &str| {
        name == "floor"
            || opts
                .transports
                .as_ref()
                .map_or(true, |list| list.iter().any(|n| n == name))
    };
    if wanted("iceoryx2") && !all.iter().any(|t| t.name() == "iceoryx2") {
        note("iceoryx2 omitted: built without the `peers` feature");
    }
    let selected: Vec<&dyn Transport> = all
        .iter()
        .map(|t| &**t)
        .filter(|t| wanted(t.name()))
        .collect();

    let cpus = allowed_cpus();
    let (ping_cpu, pong_cpu) = match (opts.pin, cpus.as_slice()) {
        (true, [a, b, ..]) => (Some(*a), Some(*b)),
        (true, _) => {
            note("fewer than 2 CPUs available: not pinning (spinning transports will suffer)");
            (None, None)
        }
        (false, _) => (None, None),
    };
    if let Some(cpu) = ping_cpu {
        pin_current_thread(cpu)?;
    }
    let ctx = Ctx {
        opts,
        key: format!("{}{}", peer::KEY_PREFIX, std::process::id()),
        dir: peer::run_dir()?,
        local_receiver_cpu: pong_cpu,
        noted: RefCell::new(HashSet::new()),
    };
    peer::remove_stale(&ctx.dir);
    let mut peer = peer::Peer::spawn(&ctx.key, &ctx.dir, pong_cpu)?;

    // Latency: all sizes interleaved, so every size is measured in every cycle.
    let lat_variants: Vec<Variant<'_>> = variants(opts, &selected, Mode::Latency)
        .into_iter()
        .filter(|v| v.transport.placement() == Placement::CrossProcess)
        .collect();
    let t0 = Instant::now();
    let progress = progress::Progress::start(
        "ringbus bench: latency",
        (opts.rounds * opts.sizes.len() * lat_variants.len()) as u64,
        "rounds",
    );
    let records = latency_phase(&ctx, &mut peer, &lat_variants, &progress)?;
    drop(progress);
    peer.reset()?;
    eprintln!(
        "ringbus bench: latency ({} cycles over {} sizes) done in {:.1} s",
        opts.rounds,
        opts.sizes.len(),
        t0.elapsed().as_secs_f64()
    );

    // Streaming: size by size (only rates of the same size are compared).
    let stream_variants = variants(opts, &selected, Mode::Stream);
    let t0 = Instant::now();
    let progress = progress::Progress::start(
        "ringbus bench: streaming",
        (opts.sizes.len() * opts.rounds.min(STREAM_ROUNDS) * stream_variants.len()) as u64,
        "rounds",
    );
    let mut rates = Vec::with_capacity(opts.sizes.len());
    for &payload in &opts.sizes {
        rates.push(stream_size(
            &ctx,
            &mut peer,
            &stream_variants,
            payload,
            &progress,
        )?);
        peer.reset()?;
    }
    drop(progress);
    eprintln!(
        "ringbus bench: streaming done in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    peer.quit()?;

    let mut rows = Vec::new();
    for ((&payload, records), rates) in opts.sizes.iter().zip(&records).zip(&rates) {
        rows.extend(size_rows(
            opts.pattern,
            payload,
            &lat_variants,
            records,
            &stream_variants,
            rates,
        ));
    }
    Ok(rows)
}

/// The variants (rows) measured in `mode` rounds: each supporting transport, then the
/// touch variants (not for the floor) when `--touch` is on.
fn variants<'a>(opts: &Options, selected: &[&'a dyn Transport], mode: Mode) -> Vec<Variant<'a>> {
    let supported = || {
        selected
            .iter()
            .copied()
            .filter(move |t| t.supports(opts.pattern, mode))
    };
    let mut v: Vec<Variant<'a>> = supported()
        .map(|transport| Variant {
            transport,
            touch: false,
        })
        .collect();
    if opts.touch {
        v.extend(
            supported()
                .filter(|t| t.name() != "floor")
                .map(|transport| Variant {
                    transport,
                    touch: true,
                }),
        );
    }
    v
}

/// Parent ends of one mode, per (transport name, payload size), created lazily.
#[derive(Default)]
struct Ends {
    ends: HashMap<(&'static str, usize), Box<dyn PingEnd>>,
    failed: HashSet<(&'static str, usize)>,
}

impl Ends {
    fn failed(&self, v: &Variant<'_>, payload: usize) -> bool {
        self.failed.contains(&(v.transport.name(), payload))
    }
}

/// Order of the variants in latency cycle `cycle` of `n` variants: the floor (index 0)
/// opens the cycle, the others follow rotated by one place per cycle.
fn cycle_order(n: usize, cycle: usize) -> impl Iterator<Item = usize> {
    let others = n.saturating_sub(1).max(1);
    (0..n).map(move |i| match i {
        0 => 0,
        i => 1 + (i - 1 + cycle) % others,
    })
}

/// All latency rounds: `opts.rounds` cycles; each cycle runs every payload size in turn,
/// and for each size the floor first, then the others in [`cycle_order`]. The ends of all
/// sizes stay alive (in both processes) until the phase ends. Returns one record per
/// (size, variant), indexed like `opts.sizes` and `lat_variants`.
fn latency_phase(
    ctx: &Ctx<'_>,
    peer: &mut peer::Peer,
    lat_variants: &[Variant<'_>],
    progress: &progress::Progress,
) -> Result<Vec<Vec<LatencyRecord>>> {
    let opts = ctx.opts;
    let setups: Vec<Setup> = opts
        .sizes
        .iter()
        .map(|&payload| ctx.setup(Mode::Latency, payload))
        .collect();
    let mut ends = Ends::default();
    let mut records: Vec<Vec<LatencyRecord>> = opts
        .sizes
        .iter()
        .map(|_| {
            lat_variants
                .iter()
                .map(|_| LatencyRecord::new(opts.rounds))
                .collect()
        })
        .collect();
    for cycle in 0..opts.rounds {
        // Every size in every cycle: rows of different sizes are measured close in time,
        // so a switch of the machine's latency mode hits all sizes alike. Within a size
        // the floor comes first (it is the reference of the cycle's ratios); the others
        // rotate by one place per cycle, so no transport always follows the same one
        // (what ran just before, spinning or sleeping, shifts the next round on this VM).
        for (setup, size_records) in setups.iter().zip(&mut records) {
            let count = latency_count(opts.msgs, setup.payload);
            let warmup = warmup_count(count);
            for i in cycle_order(lat_variants.len(), cycle) {
                let (v, record) = (&lat_variants[i], &mut size_records[i]);
                // Between rounds: the bar is redrawn here, never during one.
                progress.inc(1);
                if ends.failed(v, setup.payload) {
                    continue;
                }
                let mut hist = stats::new_histogram();
                let ran = run_round(
                    ctx,
                    peer,
                    &mut ends,
                    v,
                    setup,
                    count + warmup,
                    |end, peer| {
                        end.latency_round(LatencyRound {
                            count: count + warmup,
                            warmup,
                            touch: v.touch,
                            hist: &mut hist,
                        })?;
                        peer.finish_run()?;
                        Ok(())
                    },
                )?;
                if ran.is_some() {
                    record.add_round(cycle, &hist);
                }
            }
        }
    }
    Ok(records)
}

/// A few streaming rounds of all variants in turn for one payload size; returns the
/// msgs/s (`pubsub`, counted by the receiver) or pipelined calls/s (`rpc`, counted by the
/// client, i.e. this process) of each round, per variant.
fn stream_size(
    ctx: &Ctx<'_>,
    peer: &mut peer::Peer,
    stream_variants: &[Variant<'_>],
    payload: usize,
    progress: &progress::Progress,
) -> Result<Vec<Vec<RoundRate>>> {
    let opts = ctx.opts;
    let setup = ctx.setup(Mode::Stream, payload);
    let scount = stream_count(opts.msgs, payload);
    let mut ends = Ends::default();
    // Per variant and round: the rate, and (rpc) the rate x the same round's round-trip p50.
    let mut rates: Vec<Vec<RoundRate>> = stream_variants.iter().map(|_| Vec::new()).collect();
    for _ in 0..opts.rounds.min(STREAM_ROUNDS) {
        for (v, rate) in stream_variants.iter().zip(&mut rates) {
            progress.inc(1);
            if ends.failed(v, payload) {
                continue;
            }
            let outcome = if v.transport.placement() == Placement::InProcess {
                Some(
                    v.transport
                        .local_stream(&setup, scount, v.touch, ctx.local_receiver_cpu)?,
                )
            } else {
                run_round(ctx, peer, &mut ends, v, &setup, scount, |end, peer| {
                    let sent = end.stream_send(scount, v.touch)?;
                    let served = peer.finish_run()?;
                    match opts.pattern {
                        Pattern::PubSub | Pattern::Queue => Ok(served),
                        Pattern::Rpc => sent.ok_or_else(|| err("the client end measured no calls")),
                    }
                })?
            };
            if let Some(o) = outcome {
                if let Some(r) = o.msgs_per_s() {
                    rate.push((r, stats::pipelined_x_rtt(Some(r), o.rtt_p50_ns)));
                }
            }
        }
    }
    Ok(rates)
}

/// One streaming round's rate, and (rpc) the rate times that round's own round-trip p50.
type RoundRate = (f64, Option<f64>);

/// The rows of one payload size: latency variants (with their streaming rate), then
/// streaming-only ones.
fn size_rows(
    pattern: Pattern,
    payload: usize,
    lat_variants: &[Variant<'_>],
    records: &[LatencyRecord],
    stream_variants: &[Variant<'_>],
    rates: &[Vec<RoundRate>],
) -> Vec<Row> {
    let floor = lat_variants
        .iter()
        .position(|v| v.transport.name() == "floor" && !v.touch)
        .map(|i| &records[i]);
    let rounds_of = |label: &str| {
        stream_variants
            .iter()
            .position(|v| v.label() == label)
            .map(|i| &rates[i])
    };
    let rate_of =
        |label: &str| rounds_of(label).and_then(|r| stats::median(r.iter().map(|x| x.0).collect()));
    // Median over rounds of (calls/s x that round's own round-trip p50).
    let paired_of = |label: &str| {
        rounds_of(label).and_then(|r| stats::median(r.iter().filter_map(|x| x.1).collect()))
    };
    let mut rows = Vec::new();
    for (v, record) in lat_variants.iter().zip(records) {
        let Some(latency) = record.summary(pattern.latency_kind()) else {
            continue;
        };
        let msgs_per_s = rate_of(&v.label());
        rows.push(Row {
            transport: v.label(),
            payload_bytes: payload,
            touch: v.touch,
            latency: Some(latency),
            msgs_per_s,
            ratio_p50_to_floor: floor.and_then(|f| record.ratio_to(f)),
            // Latency is the round trip for rpc (not halved).
            pipelined_x_rtt: match pattern {
                Pattern::Rpc => paired_of(&v.label())
                    .or_else(|| stats::pipelined_x_rtt(msgs_per_s, Some(latency.p50_ns))),
                Pattern::PubSub | Pattern::Queue => None,
            },
            shape: None,
            rate_ratio: None,
        });
    }
    for (v, rate) in stream_variants.iter().zip(rates) {
        if rate.is_empty() || lat_variants.iter().any(|l| l.label() == v.label()) {
            continue;
        }
        rows.push(Row {
            transport: v.label(),
            payload_bytes: payload,
            touch: v.touch,
            latency: None,
            msgs_per_s: stats::median(rate.iter().map(|x| x.0).collect()),
            ratio_p50_to_floor: None,
            pipelined_x_rtt: None,
            shape: None,
            rate_ratio: None,
        });
    }
    rows
}

/// One cross-process round: make sure both ends exist, start the child, run `body` on
/// the parent's end. Returns `Ok(None)` (and marks the transport failed for this size)
/// when either end cannot be set up; errors during the round itself are fatal.
fn run_round<T>(
    ctx: &Ctx<'_>,
    peer: &mut peer::Peer,
    ends: &mut Ends,
    v: &Variant<'_>,
    setup: &Setup,
    child_count: u64,
    body: impl FnOnce(&mut dyn PingEnd, &mut peer::Peer) -> Result<T>,
) -> Result<Option<T>> {
    let name = v.transport.name();
    let key = (name, setup.payload);
    if let Entry::Vacant(slot) = ends.ends.entry(key) {
        match v.transport.ping(setup) {
            Ok(end) => {
                slot.insert(end);
            }
            Err(e) => {
                ctx.omitted(name, setup, &e.to_string());
                ends.failed.insert(key);
                return Ok(None);
            }
        }
    }
    let run = peer::RunCommand {
        pattern: setup.pattern,
        mode: setup.mode,
        transport: name.to_string(),
        payload: setup.payload,
        count: child_count,
        touch: v.touch,
    };
    if let Err(e) = peer.start_run(&run)? {
        ctx.omitted(name, setup, &format!("bench-peer: {e}"));
        ends.ends.remove(&key);
        ends.failed.insert(key);
        return Ok(None);
    }
    let end = ends.ends.get_mut(&key).expect("created above");
    body(&mut **end, peer).map(Some).map_err(|e| {
        err(format!(
            "{} {} B {} round failed: {e}",
            v.label(),
            setup.payload,
            setup.mode
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ringbus bench ARGS` as parsed by the tool's own command line.
    fn parse(args: &[&str]) -> std::result::Result<Options, String> {
        use clap::Parser as _;
        let words = ["ringbus", "bench"].iter().chain(args);
        match crate::Cli::try_parse_from(words)
            .map_err(|e| e.to_string())?
            .command
        {
            crate::Command::Bench { sub: None, args } => args.options(),
            other => Err(format!("not the bench patterns: {other:?}")),
        }
    }

    #[test]
    fn parses_flags() {
        let o = parse(&[
            "pubsub",
            "--json",
            "--touch",
            "--rounds",
            "3",
            "--msgs",
            "10",
            "--sizes",
            "8,64",
            "--transports",
            "uds,futex,ringbus",
        ])
        .unwrap();
        assert!(o.json && o.touch);
        assert!(o.plot.is_none());
        assert_eq!((o.rounds, o.msgs), (3, 10));
        assert_eq!(o.sizes, vec![8, 64]);
        assert_eq!(o.transports.unwrap(), vec!["uds", "futex", "ringbus"]);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse(&["--sizes", "4"]).is_err());
        assert!(parse(&["--transports", "nope"]).is_err());
        assert!(parse(&["--rounds", "0"]).is_err());
        assert!(parse(&["queue", "--touch"]).is_err());
        assert!(parse(&["queue", "--transports", "uds"]).is_err());
        assert!(parse(&["--transports", "ringbus-durable-never"]).is_err());
        assert!(parse(&["nope"]).is_err());
        assert!(parse(&["pubsub", "extra"]).is_err());
        assert!(parse(&["rpc", "pubsub"]).is_err());
    }

    #[test]
    fn parses_rpc_pattern() {
        assert_eq!(parse(&[]).unwrap().pattern, Pattern::PubSub);
        let o = parse(&["rpc", "--json", "--rounds", "10"]).unwrap();
        assert_eq!(o.pattern, Pattern::Rpc);
        assert!(o.json);
        assert_eq!(o.rounds, 10);
        // The pattern may follow the flags.
        assert_eq!(parse(&["--no-pin", "rpc"]).unwrap().pattern, Pattern::Rpc);
        assert_eq!(Pattern::parse("rpc").unwrap().as_str(), "rpc");
        // A later flag wins, as before.
        assert_eq!(
            parse(&["--rounds", "2", "--rounds", "4"]).unwrap().rounds,
            4
        );
        let o = parse(&[
            "--no-pin",
            "--sizes",
            "64, 128",
            "--transports",
            "uds,,ringbus",
        ])
        .unwrap();
        assert!(!o.pin);
        assert_eq!(o.sizes, vec![64, 128]);
        assert_eq!(o.transports.unwrap(), vec!["uds", "ringbus"]);
        let o = parse(&["rpc", "--plot", "/tmp/charts"]).unwrap();
        assert_eq!(o.plot.as_deref(), Some(std::path::Path::new("/tmp/charts")));
        assert!(parse(&["--plot"]).is_err(), "--plot needs a directory");
        let o = parse(&[]).unwrap();
        assert_eq!(
            (o.rounds, o.msgs, o.pin),
            (DEFAULT_ROUNDS, DEFAULT_MSGS, true)
        );
        assert_eq!(o.sizes, DEFAULT_SIZES);
        assert!(o.transports.is_none());
        assert_eq!(
            Pattern::Rpc.latency_kind(),
            transport::LatencyKind::RoundTrip
        );
        assert_eq!(Pattern::PubSub.latency_kind().as_str(), "one_way");
        assert_eq!(Pattern::Rpc.reply_bytes(65536), HEADER_BYTES);
        assert_eq!(Pattern::PubSub.reply_bytes(65536), 65536);
    }

    #[test]
    fn parses_queue_pattern_with_its_defaults() {
        let o = parse(&["queue", "--json"]).unwrap();
        assert_eq!(o.pattern, Pattern::Queue);
        assert_eq!((o.rounds, o.sizes.clone()), (7, vec![64, 1024]));
        assert_eq!(o.pattern.latency_kind().as_str(), "one_way");
        let o = parse(&[
            "--rounds",
            "3",
            "--sizes",
            "128",
            "--transports",
            "crossbeam,ringbus-durable-batch",
            "queue",
        ])
        .unwrap();
        assert_eq!((o.rounds, o.sizes), (3, vec![128]));
        assert_eq!(
            o.transports.unwrap(),
            vec!["crossbeam", "ringbus-durable-batch"]
        );
        // Every queue transport is known, none of the ping/pong ones.
        let all = transport::registry();
        let selected: Vec<&dyn Transport> = all.iter().map(|t| &**t).collect();
        let opts = parse(&["queue"]).unwrap();
        assert!(variants(&opts, &selected, Mode::Stream).is_empty());
        assert!(variants(&opts, &selected, Mode::Latency).is_empty());
    }

    #[test]
    fn rpc_takes_no_in_process_transport() {
        let opts = parse(&["rpc"]).unwrap();
        let all = transport::registry();
        let selected: Vec<&dyn Transport> = all.iter().map(|t| &**t).collect();
        let stream: Vec<String> = variants(&opts, &selected, Mode::Stream)
            .iter()
            .map(Variant::label)
            .collect();
        assert!(stream.iter().any(|n| n == "floor"));
        assert!(stream.iter().any(|n| n == "uds"));
        assert!(!stream.iter().any(|n| n == "crossbeam" || n == "futex"));
        let latency: Vec<String> = variants(&opts, &selected, Mode::Latency)
            .iter()
            .map(Variant::label)
            .collect();
        assert_eq!(latency.first().map(String::as_str), Some("floor"));
        assert!(latency.iter().any(|n| n == "futex"));
    }

    #[test]
    fn tokio_uds_is_selectable_in_pubsub_and_rpc() {
        for pattern in ["pubsub", "rpc"] {
            let o = parse(&[pattern, "--transports", "tokio-uds"]).unwrap();
            assert_eq!(
                o.transports.as_deref(),
                Some(&["tokio-uds".to_string()][..])
            );
            let all = transport::registry();
            let selected: Vec<&dyn Transport> = all.iter().map(|t| &**t).collect();
            for mode in [Mode::Latency, Mode::Stream] {
                let labels: Vec<String> = variants(&o, &selected, mode)
                    .iter()
                    .map(Variant::label)
                    .collect();
                let uds = labels.iter().position(|n| n == "uds").unwrap();
                assert_eq!(labels.get(uds + 1).map(String::as_str), Some("tokio-uds"));
            }
        }
        assert!(parse(&["queue", "--transports", "tokio-uds"]).is_err());
    }

    #[test]
    fn ringbus_async_rows_are_selectable_in_pubsub_and_rpc() {
        let all = transport::registry();
        let selected: Vec<&dyn Transport> = all.iter().map(|t| &**t).collect();
        let rows = ["ringbus-async", "ringbus-async-parked"];
        for pattern in ["pubsub", "rpc"] {
            for row in rows {
                let o = parse(&[pattern, "--transports", row]).unwrap();
                assert_eq!(o.transports.as_deref(), Some(&[row.to_string()][..]));
            }
            let o = parse(&[
                pattern,
                "--transports",
                "uds,ringbus-async,ringbus-async-parked",
            ])
            .unwrap();
            assert_eq!(o.transports.as_ref().map(Vec::len), Some(3));
            // In the default list too, right after ringbus, in both modes.
            let o = parse(&[pattern]).unwrap();
            for mode in [Mode::Latency, Mode::Stream] {
                let labels: Vec<String> = variants(&o, &selected, mode)
                    .iter()
                    .map(Variant::label)
                    .collect();
                let ringbus = labels.iter().position(|n| n == "ringbus").unwrap();
                assert_eq!(
                    labels[ringbus + 1..ringbus + 3],
                    rows.map(String::from),
                    "{pattern} {mode}"
                );
            }
        }
        for row in rows {
            assert!(parse(&["queue", "--transports", row]).is_err());
        }
    }

    #[test]
    fn cycles_open_with_floor_and_rotate() {
        let orders: Vec<Vec<usize>> = (0..4).map(|c| cycle_order(4, c).collect()).collect();
        assert_eq!(
            orders,
            vec![
                vec![0, 1, 2, 3],
                vec![0, 2, 3, 1],
                vec![0, 3, 1, 2],
                vec![0, 1, 2, 3]
            ]
        );
        assert_eq!(cycle_order(1, 7).collect::<Vec<_>>(), vec![0]);
        assert_eq!(cycle_order(2, 7).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn resources_differ_per_size() {
        let setup = |payload| Setup {
            pattern: Pattern::PubSub,
            mode: Mode::Latency,
            payload,
            key: "rb-bench-1".into(),
            dir: "/tmp".into(),
        };
        assert_ne!(
            setup(64).resource_path("uds", ".sock"),
            setup(1024).resource_path("uds", ".sock")
        );
        assert_ne!(
            setup(64).resource_name("ringbus"),
            setup(1024).resource_name("ringbus")
        );
    }

    #[test]
    fn counts_shrink_for_big_payloads() {
        assert_eq!(latency_count(3000, 64), 3000);
        assert_eq!(latency_count(3000, 1 << 20), 50);
        assert!(stream_count(3000, 1 << 20) >= 64);
        assert_eq!(warmup_count(3000), 100);
    }
}
