//! The transport abstraction shared by all benchmark patterns.
//!
//! A [`Transport`] creates a [`PingEnd`] in the parent ("ping") process and a
//! [`PongEnd`] in the child ("pong") process for one [`Setup`] (pattern, mode, payload
//! size). Both ends stay alive for all rounds of that setup (latency ends of all sizes
//! through the whole interleaved latency phase), so set-up cost is paid once. Hot loops
//! live inside the ends (statically dispatched); only one virtual call is made per round.

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use hdrhistogram::Histogram;

use super::util::{err, Result, HEADER_BYTES};

/// Messaging pattern under test. `pubsub` and `rpc` use the [`Transport`]s of
/// [`registry`]; `queue` has its own transports, roles and rounds (see
/// [`super::queue`]) and shares the child process, statistics and reports.
///
/// It is also the `PATTERN` word of `ringbus bench`; each `#[value(help)]` is the
/// line `ringbus bench --help` prints for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Pattern {
    /// One publisher, one subscriber per direction. Latency is reported one-way (round
    /// trip / 2); streaming counts messages at the receiver (pong).
    #[value(
        name = "pubsub",
        help = "publish-subscribe (default): ping publishes, pong publishes it back"
    )]
    PubSub,
    /// Request/response: ping is the client, pong the server. A request carries the
    /// payload, the response 8 bytes (the request's sequence number, checked by the
    /// client). Latency is the full round trip; streaming means pipelined calls with
    /// [`RPC_WINDOW`] in flight, counted at the client (ping).
    #[value(
        help = "request/response: ping is the client, pong the server; request of the \
                payload size, 8-byte response (the request's sequence number)"
    )]
    Rpc,
    /// Work queue: producers send, competing consumers receive and ack every message.
    /// Latency is one-way, send to receive, from timestamps carried in the payload;
    /// throughput counts acked messages (see [`super::queue`]).
    #[value(help = "work queue: 1->1 and 2->2 producers->consumers, each a process (see below)")]
    Queue,
}

/// Calls a client keeps in flight in `rpc` streaming (pipelined) rounds.
pub const RPC_WINDOW: usize = 16;

impl Pattern {
    /// Name used on the command line, in the child protocol and in the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::PubSub => "pubsub",
            Pattern::Rpc => "rpc",
            Pattern::Queue => "queue",
        }
    }

    /// Parses a pattern name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "pubsub" => Ok(Pattern::PubSub),
            "rpc" => Ok(Pattern::Rpc),
            "queue" => Ok(Pattern::Queue),
            _ => Err(err(format!("unknown pattern `{s}`"))),
        }
    }

    /// What the reported latency figures are.
    pub fn latency_kind(self) -> LatencyKind {
        match self {
            Pattern::PubSub | Pattern::Queue => LatencyKind::OneWay,
            Pattern::Rpc => LatencyKind::RoundTrip,
        }
    }

    /// Bytes of the message pong sends back for a `payload`-byte message from ping: the
    /// same size for `pubsub`, the 8-byte response for `rpc`, nothing for `queue` (whose
    /// consumers only ack).
    pub fn reply_bytes(self, payload: usize) -> usize {
        match self {
            Pattern::PubSub => payload,
            Pattern::Rpc => HEADER_BYTES,
            Pattern::Queue => 0,
        }
    }
}

/// Whether latency figures are one-way (round trip / 2) or full round trips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatencyKind {
    /// One way: round trip / 2 (`pubsub`), or send to receive measured directly with
    /// `CLOCK_MONOTONIC` stamps carried in the payload (`queue`).
    OneWay,
    /// The whole round trip (`rpc`: request out, response back).
    RoundTrip,
}

impl LatencyKind {
    /// Name in the JSON output (`"latency"` field).
    pub fn as_str(self) -> &'static str {
        match self {
            LatencyKind::OneWay => "one_way",
            LatencyKind::RoundTrip => "round_trip",
        }
    }
}

/// What one round measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Ping-pong: every message is answered before the next is sent.
    Latency,
    /// Throughput. `pubsub`: one-directional, the sender (ping) sends as fast as it can,
    /// the receiver (pong) counts. `rpc`: pipelined calls, the client (ping) keeps
    /// [`RPC_WINDOW`] calls in flight and counts the responses; the server just answers.
    Stream,
}

impl Mode {
    /// Name used in the child protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Latency => "latency",
            Mode::Stream => "stream",
        }
    }

    /// Parses a mode name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "latency" => Ok(Mode::Latency),
            "stream" => Ok(Mode::Stream),
            _ => Err(err(format!("unknown mode `{s}`"))),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a transport's two ends run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Ping in the parent, pong in the child process.
    CrossProcess,
    /// Both ends are threads of the parent (streaming only), e.g. `crossbeam`.
    InProcess,
}

/// Everything both ends need to find each other for one payload size.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Pattern under test.
    pub pattern: Pattern,
    /// Latency or streaming.
    pub mode: Mode,
    /// Payload size in bytes (at least the 8-byte header word).
    pub payload: usize,
    /// Unique prefix for names of shared resources (contains the parent's pid).
    pub key: String,
    /// Directory for files and sockets (`$RINGBUS_ROOT`, else `/dev/shm`, else temp).
    pub dir: PathBuf,
}

impl Setup {
    /// A name unique to this run, transport, mode and payload size (the latency ends of
    /// all sizes are alive at the same time, so each needs its own resources).
    pub fn resource_name(&self, transport: &str) -> String {
        format!(
            "{}-{}-{}-{}-{}",
            self.key,
            self.pattern.as_str(),
            transport,
            self.mode,
            self.payload
        )
    }

    /// A path in [`Setup::dir`] for [`Setup::resource_name`] plus a suffix.
    pub fn resource_path(&self, transport: &str, suffix: &str) -> PathBuf {
        self.dir
            .join(format!("{}{}", self.resource_name(transport), suffix))
    }
}

/// Result of one streaming round, measured where the messages arrive: at the receiver
/// (pong) for `pubsub`, at the client (ping, counting responses) for `rpc`.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamOutcome {
    /// Messages (responses for `rpc`) received.
    pub count: u64,
    /// Nanoseconds from the first to the last received message (0 when not measured
    /// on this side, e.g. an `rpc` server).
    pub elapsed_ns: u64,
    /// Sum of touched bytes (keeps the reads alive; not compared).
    pub checksum: u64,
    /// `rpc`: round-trip p50 (ns) of call-after-call calls made in the same round just before
    /// the pipelined ones, so the two are compared in the same machine state.
    pub rtt_p50_ns: Option<u64>,
}

impl StreamOutcome {
    /// What a receiving end measured: `count` messages in `elapsed_ns` (first to last).
    pub fn received(count: u64, elapsed_ns: u64, checksum: u64) -> Self {
        Self {
            count,
            elapsed_ns,
            checksum,
            rtt_p50_ns: None,
        }
    }

    /// What an `rpc` server reports for `count` answered requests (the client measures).
    pub fn served(count: u64, checksum: u64) -> Self {
        Self::received(count, 0, checksum)
    }

    /// Messages (or calls) per second over the measured interval (`count - 1` gaps).
    pub fn msgs_per_s(&self) -> Option<f64> {
        (self.count > 1 && self.elapsed_ns > 0)
            .then(|| (self.count - 1) as f64 * 1e9 / self.elapsed_ns as f64)
    }
}

/// A transport measured by the harness (reference peer or the library itself).
pub trait Transport: Send + Sync {
    /// Name in the command line, child protocol and output.
    fn name(&self) -> &'static str;

    /// Whether this transport takes part in `mode` rounds of `pattern`. By default every
    /// ping/pong pattern in both modes (`queue` has its own transports, see [`super::queue`]).
    fn supports(&self, pattern: Pattern, _mode: Mode) -> bool {
        pattern != Pattern::Queue
    }

    /// Where the two ends run.
    fn placement(&self) -> Placement {
        Placement::CrossProcess
    }

    /// Creates the parent's end. Called before the child is asked to create its end, so
    /// this side creates shared resources (files, listeners, services).
    fn ping(&self, setup: &Setup) -> Result<Box<dyn PingEnd>>;

    /// Creates the child's end; the parent's end already exists.
    fn pong(&self, setup: &Setup) -> Result<Box<dyn PongEnd>>;

    /// Runs one whole streaming round inside the parent (for [`Placement::InProcess`]).
    /// `receiver_cpu` is where the receiving thread should be pinned, if anywhere.
    fn local_stream(
        &self,
        _setup: &Setup,
        _count: u64,
        _touch: bool,
        _receiver_cpu: Option<usize>,
    ) -> Result<StreamOutcome> {
        Err(err(format!("{} has no in-process stream", self.name())))
    }
}

/// One latency round of the parent's end: `count` round trips (the peer serves exactly
/// `count`), of which all but the first `warmup` are recorded in `hist` (ns).
pub struct LatencyRound<'h> {
    /// Round trips in the round.
    pub count: u64,
    /// Unrecorded round trips at its start.
    pub warmup: u64,
    /// Whether sender and receiver touch every payload byte.
    pub touch: bool,
    /// Where the round-trip times go.
    pub hist: &'h mut Histogram<u64>,
}

impl LatencyRound<'_> {
    /// Runs the round: `round_trip(seq)` for `seq` in `first_seq..first_seq+count`, each
    /// timed, all but the first `warmup` recorded. Returns `count` (to advance the end's
    /// sequence number by). Generic and inlined: the timed loop makes no dynamic call.
    #[inline(always)]
    pub fn time(
        self,
        first_seq: u64,
        mut round_trip: impl FnMut(u64) -> Result<()>,
    ) -> Result<u64> {
        for i in 0..self.count {
            let t0 = Instant::now();
            round_trip(first_seq + i)?;
            let rtt = t0.elapsed();
            if i >= self.warmup {
                self.hist
                    .saturating_record(u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX));
            }
        }
        Ok(self.count)
    }
}

/// The parent's end of a transport.
pub trait PingEnd {
    /// Runs one latency round ([`LatencyRound`]).
    fn latency_round(&mut self, round: LatencyRound<'_>) -> Result<()>;

    /// `pubsub`: sends `count` messages as fast as the transport accepts them and returns
    /// `None` (the receiver measures). `rpc`: makes `count` pipelined calls with
    /// [`RPC_WINDOW`] in flight, checks every response and returns `Some` timing of the
    /// responses (the client measures).
    fn stream_send(&mut self, count: u64, touch: bool) -> Result<Option<StreamOutcome>>;
}

/// The child's end of a transport.
pub trait PongEnd {
    /// Answers exactly `count` messages (`rpc`: requests, with the 8-byte response);
    /// returns a checksum of touched bytes.
    fn latency_serve(&mut self, count: u64, touch: bool) -> Result<u64>;

    /// `pubsub`: receives exactly `count` messages and times them. `rpc`: answers exactly
    /// `count` pipelined requests (the outcome's `elapsed_ns` is 0: the client measures).
    fn stream_receive(&mut self, count: u64, touch: bool) -> Result<StreamOutcome>;
}

/// Error for an end asked to do what its mode does not cover.
pub fn wrong_mode(transport: &str, mode: Mode) -> super::util::BoxError {
    err(format!("{transport}: end was set up for {mode} rounds"))
}

/// Error for a ping/pong transport asked for a `queue` end (`queue` has its own
/// transports, see [`super::queue`]).
pub fn no_queue(transport: &str) -> super::util::BoxError {
    err(format!("{transport}: `queue` has its own transports"))
}

/// `Ok` if an end set up for `have` rounds is asked for `want` rounds, else [`wrong_mode`].
pub fn check_mode(transport: &str, have: Mode, want: Mode) -> super::util::Result<()> {
    if have == want {
        Ok(())
    } else {
        Err(wrong_mode(transport, have))
    }
}

/// All transports known to this build, in report order. `floor` comes first: it is the
/// reference for `ratio_p50_to_floor`.
pub fn registry() -> Vec<Box<dyn Transport>> {
    let mut all: Vec<Box<dyn Transport>> = vec![
        Box::new(super::floor::Floor),
        Box::new(super::uds::Uds),
        Box::new(super::tokio_uds::TokioUds),
        Box::new(super::futex::Futex),
    ];
    #[cfg(feature = "peers")]
    all.push(Box::new(super::iceoryx2::Iceoryx2));
    all.push(Box::new(super::ringbus::Ringbus { blocking: false }));
    all.push(Box::new(super::ringbus::RingbusAsync { parked: false }));
    all.push(Box::new(super::ringbus::RingbusAsync { parked: true }));
    all.push(Box::new(super::ringbus::Ringbus { blocking: true }));
    all.push(Box::new(super::crossbeam::Crossbeam));
    all
}

/// Names accepted by `--transports`, including ones this build may lack.
pub const KNOWN_TRANSPORTS: &[&str] = &[
    "floor",
    "uds",
    "tokio-uds",
    "futex",
    "iceoryx2",
    "ringbus",
    "ringbus-async",
    "ringbus-async-parked",
    "ringbus-blocking",
    "crossbeam",
];
