//! What producers and consumers do in a `bench queue` round, wherever they run: the
//! message header, the producer and consumer loops (shared by `crossbeam` threads and
//! ringbus worker processes, so both are driven alike), the ack words of the paced
//! latency rounds, and the child side of the `queue` commands of the peer protocol.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::super::stats;
use super::super::transport::Mode;
use super::super::util::{err, Result, ShmFile};
use super::{QueueTransport, Role, Shape};

/// Bytes of the header every message starts with: sequence number, send stamp, producer
/// index, kind.
pub const QUEUE_HEADER_BYTES: usize = 24;

/// Producers a round may have (the ack file has one word per producer).
pub const MAX_PRODUCERS: usize = 16;

/// Bytes between two words of the ack file (separate cache lines, also for adjacent-line
/// prefetch).
const ACK_STRIDE: usize = 128;

/// Offset of the stop counter in the ack file, after the producers' ack words.
const STOPS_OFFSET: usize = MAX_PRODUCERS * ACK_STRIDE;

/// Length of the shared ack file of a run.
pub const ACK_FILE_LEN: usize = STOPS_OFFSET + ACK_STRIDE;

/// Messages between two clock reads of a streaming producer (its deadline check).
const DEADLINE_CHECK: u64 = 64;

/// Longest a role waits for anything (a message, room, an ack) before its round fails:
/// shorter than the other patterns' `MSG_TIMEOUT`, so a failing round costs little.
pub const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// Busy polls before a waiting loop starts yielding the CPU between polls.
const SPINS_BEFORE_YIELD: u32 = 128;

/// `Header::kind` of a data message.
const KIND_DATA: u32 = 0;
/// `Header::kind` of the message a producer sends after its last data message.
const KIND_STOP: u32 = 1;

/// `CLOCK_MONOTONIC` now, in ns: one clock for all processes of the machine.
#[inline(always)]
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(t.tv_nsec as u64)
}

/// The first [`QUEUE_HEADER_BYTES`] of every message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Sequence number: increasing per producer over the whole run.
    pub seq: u64,
    /// `CLOCK_MONOTONIC` ns just before the send (latency rounds; 0 in streaming rounds).
    pub stamp_ns: u64,
    /// Index of the producer.
    pub producer: u32,
    /// [`KIND_DATA`] or [`KIND_STOP`].
    pub kind: u32,
}

impl Header {
    /// Writes the header into the first [`QUEUE_HEADER_BYTES`] of `buf`.
    #[inline(always)]
    pub fn write(&self, buf: &mut [u8]) {
        buf[0..8].copy_from_slice(&self.seq.to_ne_bytes());
        buf[8..16].copy_from_slice(&self.stamp_ns.to_ne_bytes());
        buf[16..20].copy_from_slice(&self.producer.to_ne_bytes());
        buf[20..24].copy_from_slice(&self.kind.to_ne_bytes());
    }

    /// Reads the header from the first [`QUEUE_HEADER_BYTES`] of `buf`.
    #[inline(always)]
    pub fn read(buf: &[u8]) -> Result<Self> {
        if buf.len() < QUEUE_HEADER_BYTES {
            return Err(err(format!(
                "message of {} bytes is shorter than the header",
                buf.len()
            )));
        }
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&buf[at..at + 8]);
            u64::from_ne_bytes(w)
        };
        let half = |at: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&buf[at..at + 4]);
            u32::from_ne_bytes(w)
        };
        Ok(Self {
            seq: word(0),
            stamp_ns: word(8),
            producer: half(16),
            kind: half(20),
        })
    }
}

/// The sending side of a queue under test.
pub trait QueueTx {
    /// Sends one message of the payload size that starts with `header` (the rest is not
    /// written), waiting while the queue is full (at most [`QUEUE_WAIT`]).
    fn send(&mut self, header: &Header) -> Result<()>;
}

/// The receiving side of a queue under test.
pub trait QueueRx {
    /// Takes the next message if one is there (`None` if not): passes its bytes to
    /// `read`, then acks it; returns what `read` returned.
    fn try_receive<T>(&mut self, read: impl FnOnce(&[u8]) -> T) -> Result<Option<T>>;

    /// Called after a poll found nothing: waits a little for a message, as the transport
    /// waits best, and takes it as [`QueueRx::try_receive`] does (`None`: none came).
    /// `idle` times the wait out after [`QUEUE_WAIT`]. By default: one [`Backoff`] pause,
    /// then a poll.
    fn wait_receive<T>(
        &mut self,
        idle: &mut Backoff,
        read: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>> {
        idle.wait("a message")?;
        self.try_receive(read)
    }
}

/// Pauses between polls: busy at first, then yielding the CPU (on 2 CPUs a 2→2 round has
/// more runnable threads than CPUs, and a waiter must let the thread it waits for run).
#[derive(Default)]
pub struct Backoff {
    /// Polls that found nothing so far.
    polls: u32,
    started: Option<Instant>,
}

impl Backoff {
    /// Pauses after a poll that found nothing; fails once polls have found nothing for
    /// [`QUEUE_WAIT`].
    #[inline(always)]
    pub fn wait(&mut self, what: &str) -> Result<()> {
        self.polls = self.polls.wrapping_add(1);
        if self.polls < SPINS_BEFORE_YIELD {
            std::hint::spin_loop();
            return Ok(());
        }
        std::thread::yield_now();
        if self.polls % 256 == 0 {
            self.check(what)?;
        }
        Ok(())
    }

    /// Counts a wait that found nothing without pausing (the caller waited itself); fails
    /// once [`QUEUE_WAIT`] has passed since the first.
    pub fn waited(&mut self, what: &str) -> Result<()> {
        self.polls = self.polls.wrapping_add(1);
        self.check(what)
    }

    fn check(&mut self, what: &str) -> Result<()> {
        let t0 = *self.started.get_or_insert_with(Instant::now);
        if t0.elapsed() > QUEUE_WAIT {
            return Err(err(format!(
                "timed out after {QUEUE_WAIT:?} waiting for {what}"
            )));
        }
        Ok(())
    }
}

/// Calls `poll` until it yields a value, pausing as [`Backoff`] does; fails after
/// [`QUEUE_WAIT`].
#[inline(always)]
pub fn wait_for<T>(what: &str, mut poll: impl FnMut() -> Option<T>) -> Result<T> {
    let mut backoff = Backoff::default();
    loop {
        if let Some(v) = poll() {
            return Ok(v);
        }
        backoff.wait(what)?;
    }
}

/// The words the roles of a round share besides the queue: one per producer, the
/// sequence number of its message last acked by a consumer (paced latency rounds), and
/// the stop counter: stop messages received so far in the round (reset before each).
pub struct AckWords<'a> {
    words: Vec<&'a AtomicU64>,
    stops: &'a AtomicU64,
}

impl<'a> AckWords<'a> {
    /// The words of a shared ack file ([`ACK_FILE_LEN`] bytes).
    pub fn of_file(file: &'a ShmFile) -> Self {
        Self {
            words: (0..MAX_PRODUCERS)
                .map(|p| file.word(p * ACK_STRIDE))
                .collect(),
            stops: file.word(STOPS_OFFSET),
        }
    }

    /// The words of an in-process ack array.
    pub fn of_local(local: &'a LocalAcks) -> Self {
        Self {
            words: local.words.iter().map(|w| &w.0).collect(),
            stops: &local.stops.0,
        }
    }

    /// Sets the stop counter to zero (before a round; no role of a round is running).
    pub fn reset_stops(&self) {
        self.stops.store(0, Ordering::SeqCst);
    }

    fn word(&self, producer: usize) -> Result<&'a AtomicU64> {
        self.words
            .get(producer)
            .copied()
            .ok_or_else(|| err(format!("no ack word for producer {producer}")))
    }
}

/// An ack word on its own cache lines.
#[repr(align(128))]
#[derive(Default)]
struct PaddedWord(AtomicU64);

/// Ack words and stop counter for threads of one process (`crossbeam`).
#[derive(Default)]
pub struct LocalAcks {
    words: [PaddedWord; MAX_PRODUCERS],
    stops: PaddedWord,
}

/// What one producer or consumer did in a round.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// A producer: data messages sent (the stop message not counted).
    Produced {
        /// Data messages sent.
        sent: u64,
    },
    /// A consumer: data messages received and acked.
    Consumed {
        /// Data messages received and acked.
        count: u64,
        /// `CLOCK_MONOTONIC` ns right after the first data message was acked.
        first_ns: u64,
        /// `CLOCK_MONOTONIC` ns at the first empty poll after the last message taken.
        last_ns: u64,
        /// Latency rounds: send-to-receive ns of every data message.
        latency: Option<Histogram<u64>>,
    },
}

impl Outcome {
    /// The fields of the `done` reply.
    pub fn to_words(&self) -> String {
        match self {
            Outcome::Produced { sent } => format!("p {sent}"),
            Outcome::Consumed {
                count,
                first_ns,
                last_ns,
                latency,
            } => {
                let mut s = format!("c {count} {first_ns} {last_ns}");
                // Every non-empty bucket as value:count; recording the bucket's highest
                // equivalent value again lands in the same bucket on the parent's side.
                for v in latency.iter().flat_map(|h| h.iter_recorded()) {
                    s.push_str(&format!(
                        " {}:{}",
                        v.value_iterated_to(),
                        v.count_at_value()
                    ));
                }
                s
            }
        }
    }

    /// Parses the fields of a `done` reply.
    pub fn parse(words: &[String], mode: Mode) -> Result<Self> {
        let num = |i: usize| -> Result<u64> {
            Ok(words
                .get(i)
                .ok_or_else(|| err("short queue done reply"))?
                .parse()?)
        };
        match words.first().map(String::as_str) {
            Some("p") => Ok(Outcome::Produced { sent: num(1)? }),
            Some("c") => {
                let latency = match mode {
                    Mode::Stream => None,
                    Mode::Latency => {
                        let mut h = stats::new_histogram();
                        for pair in &words[4.min(words.len())..] {
                            let (v, c) = pair
                                .split_once(':')
                                .ok_or_else(|| err(format!("bad bucket `{pair}`")))?;
                            h.record_n(v.parse()?, c.parse()?)
                                .map_err(|e| err(format!("bad bucket `{pair}`: {e}")))?;
                        }
                        Some(h)
                    }
                };
                Ok(Outcome::Consumed {
                    count: num(1)?,
                    first_ns: num(2)?,
                    last_ns: num(3)?,
                    latency,
                })
            }
            _ => Err(err(format!("bad queue done reply {words:?}"))),
        }
    }
}

/// What one round asks of every producer and consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Round {
    /// Streaming (as fast as possible) or paced latency messages.
    pub mode: Mode,
    /// Producers and consumers of the round.
    pub shape: Shape,
    /// Data messages each producer sends at most.
    pub count: u64,
    /// Each producer stops sending data after this long, even short of `count`.
    pub max: Duration,
    /// Sequence number of each producer's first message (unique over the run).
    pub seq_base: u64,
}

/// A producer's part of a round: `round.count` data messages (fewer if `round.max` passes
/// first), then one stop message. Streaming: as fast as the queue takes them. Latency:
/// each stamped with `CLOCK_MONOTONIC` just before the send; the next one only after a
/// consumer has acked it (seen in the producer's ack word), so the queue holds at most
/// one message per producer.
pub fn produce(
    tx: &mut impl QueueTx,
    round: &Round,
    index: usize,
    acks: &AckWords<'_>,
) -> Result<Outcome> {
    let producer = u32::try_from(index)?;
    let t0 = Instant::now();
    let mut sent = 0;
    match round.mode {
        Mode::Stream => {
            for i in 0..round.count {
                if i % DEADLINE_CHECK == 0 && t0.elapsed() >= round.max {
                    break;
                }
                tx.send(&Header {
                    seq: round.seq_base + i,
                    stamp_ns: 0,
                    producer,
                    kind: KIND_DATA,
                })?;
                sent += 1;
            }
        }
        Mode::Latency => {
            let ack = acks.word(index)?;
            for i in 0..round.count {
                if t0.elapsed() >= round.max {
                    break;
                }
                let seq = round.seq_base + i;
                tx.send(&Header {
                    seq,
                    stamp_ns: monotonic_ns(),
                    producer,
                    kind: KIND_DATA,
                })?;
                sent += 1;
                // Acquire pairs with the consumer's Release store; the word carries no
                // other data, so this only has to see the value (not SeqCst: no other
                // location is ordered against it).
                wait_for("the consumer's ack", || {
                    (ack.load(Ordering::Acquire) == seq).then_some(())
                })?;
            }
        }
    }
    tx.send(&Header {
        seq: round.seq_base + sent,
        stamp_ns: 0,
        producer,
        kind: KIND_STOP,
    })?;
    Ok(Outcome::Produced { sent })
}

/// A consumer's part of a round: takes and acks messages until every producer's stop
/// message has been taken (by any consumer: the shared stop counter reaches the number of
/// producers) and nothing is left for it. Consumers claim messages in position order and
/// a producer's stop message follows its data, so once every stop message is taken,
/// every data message has been handed to some consumer; a consumer may still hold a few
/// it claimed ahead (prefetch), which it takes before it finds the queue empty.
///
/// After a poll finds nothing, the consumer waits as its transport waits best
/// ([`QueueRx::wait_receive`]) and checks the stop counter after each wait. The clock is
/// read after the first data message and at the first empty poll after a message (so the
/// end of a round is known without a clock read per message). Checks that each producer's sequence numbers increase. Latency rounds record
/// send-to-receive ns (clock read as soon as the message is taken) and store the sequence
/// number in the producer's ack word after the ack.
pub fn consume(rx: &mut impl QueueRx, round: &Round, acks: &AckWords<'_>) -> Result<Outcome> {
    let latency_round = round.mode == Mode::Latency;
    let mut latency = latency_round.then(stats::new_histogram);
    let mut last_seq: Vec<Option<u64>> = vec![None; round.shape.producers];
    let producers = round.shape.producers as u64;
    let mut count = 0;
    let (mut first_ns, mut last_ns) = (0, 0);
    let mut idle = Backoff::default();
    let read = |bytes: &[u8]| {
        let now = if latency_round { monotonic_ns() } else { 0 };
        (Header::read(bytes), now)
    };
    let mut empty = false;
    loop {
        let got = if empty {
            rx.wait_receive(&mut idle, read).map_err(|e| {
                err(format!(
                    "{e} ({count} data messages taken, {} of {producers} stop messages \
                     counted)",
                    // Relaxed: a figure for the error message only.
                    acks.stops.load(Ordering::Relaxed)
                ))
            })?
        } else {
            rx.try_receive(read)?
        };
        let Some((header, received_ns)) = got else {
            if !empty {
                last_ns = monotonic_ns();
                empty = true;
            }
            // Acquire pairs with the AcqRel increments: once every stop message is counted,
            // every claim before them is visible (the claims themselves are ordered by the
            // queue's own synchronisation; this only has to see the count). Not SeqCst: no
            // other location is ordered against this word.
            if acks.stops.load(Ordering::Acquire) >= producers {
                break;
            }
            continue;
        };
        if empty {
            (empty, idle) = (false, Backoff::default());
        }
        let header = header?;
        let p = header.producer as usize;
        let Some(last) = last_seq.get_mut(p) else {
            return Err(err(format!("message from unknown producer {p}")));
        };
        if header.kind == KIND_STOP {
            // AcqRel: a read-modify-write, so no increment is lost; see the load above.
            acks.stops.fetch_add(1, Ordering::AcqRel);
            continue;
        }
        if header.kind != KIND_DATA || header.seq < round.seq_base {
            return Err(err(format!("unexpected message {header:?}")));
        }
        if last.is_some_and(|l| header.seq <= l) {
            return Err(err(format!(
                "producer {p}: sequence {} after {}",
                header.seq,
                last.unwrap_or(0)
            )));
        }
        *last = Some(header.seq);
        if count == 0 {
            first_ns = monotonic_ns();
        }
        count += 1;
        if let Some(h) = latency.as_mut() {
            h.saturating_record(received_ns.saturating_sub(header.stamp_ns));
            // Release: the producer's Acquire load sees the ack only after this
            // consumer's ack of the message (it happened before, in program order).
            acks.word(p)?.store(header.seq, Ordering::Release);
        }
    }
    Ok(Outcome::Consumed {
        count,
        first_ns,
        last_ns,
        latency,
    })
}

/// A producer or consumer end of a cross-process transport, in a worker process.
pub trait WorkerEnd {
    /// Runs this end's part of `round`.
    fn run(&mut self, round: &Round, index: usize, acks: &AckWords<'_>) -> Result<Outcome>;
}

/// What a worker process needs to open one end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndSpec {
    /// Transport name.
    pub transport: String,
    /// Payload bytes per message.
    pub payload: usize,
    /// Producers and consumers of the queue.
    pub shape: Shape,
    /// Producer or consumer.
    pub role: Role,
    /// Index among the producers or among the consumers.
    pub index: usize,
}

impl EndSpec {
    fn to_words(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            self.transport,
            self.payload,
            self.shape.producers,
            self.shape.consumers,
            self.role.as_str(),
            self.index
        )
    }

    fn parse(w: &[&str]) -> Result<Self> {
        let [transport, payload, producers, consumers, role, index] = w else {
            return Err(err(format!("bad queue end {w:?}")));
        };
        Ok(Self {
            transport: (*transport).to_string(),
            payload: payload.parse()?,
            shape: Shape {
                producers: producers.parse()?,
                consumers: consumers.parse()?,
            },
            role: Role::parse(role)?,
            index: index.parse()?,
        })
    }
}

/// The `queue open` line: a worker opens (or keeps) an end; `dir` is the durable
/// directory (hex-encoded, so any path fits in one word) or none.
pub fn open_line(spec: &EndSpec, queue_name: &str, dir: Option<&Path>) -> String {
    let dir = dir.map_or_else(|| "-".to_string(), |d| hex(d.as_os_str().as_bytes()));
    format!("queue open {} {queue_name} {dir}", spec.to_words())
}

/// The `queue run` line: a worker runs its end's part of a round.
pub fn run_line(spec: &EndSpec, round: &Round) -> String {
    format!(
        "queue run {} {} {} {} {}",
        spec.to_words(),
        round.mode,
        round.count,
        round.max.as_micros(),
        round.seq_base
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    if s.len() % 2 != 0 {
        return Err(err(format!("bad hex `{s}`")));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| Ok(u8::from_str_radix(&s[i..i + 2], 16)?))
        .collect()
}

/// Everything a worker process needs to open ends: the transports and the ack file.
pub struct WorkerCtx<'a> {
    /// The queue transports of this build.
    pub transports: &'a [Box<dyn QueueTransport>],
    /// Path of the run's ack file (created by the parent).
    pub ack_path: PathBuf,
}

/// The ends a worker process holds, kept from round to round until `reset`.
#[derive(Default)]
pub struct WorkerEnds {
    ends: HashMap<String, Box<dyn WorkerEnd>>,
    acks: Option<ShmFile>,
}

impl WorkerEnds {
    /// Drops every end (and the ack file mapping).
    pub fn clear(&mut self) {
        self.ends.clear();
        self.acks = None;
    }

    /// Handles one `queue ...` command (the words after `queue`); `say` writes a reply.
    pub fn command(&mut self, ctx: &WorkerCtx<'_>, words: &[&str], say: &dyn Fn(&str)) {
        match words.split_first() {
            Some((&"open", rest)) => match self.open(ctx, rest) {
                Ok(()) => say("ok"),
                Err(e) => say(&format!("error {e}")),
            },
            Some((&"run", rest)) => {
                if let Err(e) = self.run(ctx, rest, say) {
                    say(&format!("error {e}"));
                }
            }
            _ => say(&format!("error unknown queue command {words:?}")),
        }
    }

    fn open(&mut self, ctx: &WorkerCtx<'_>, w: &[&str]) -> Result<()> {
        if w.len() != 8 {
            return Err(err(format!("bad queue open {w:?}")));
        }
        let spec = EndSpec::parse(&w[..6])?;
        let key = spec.to_words();
        if self.ends.contains_key(&key) {
            return Ok(());
        }
        let dir = match w[7] {
            "-" => None,
            h => Some(PathBuf::from(OsString::from_vec(unhex(h)?))),
        };
        let end = super::open_end(ctx.transports, &spec, w[6], dir)?;
        self.ends.insert(key, end);
        Ok(())
    }

    fn run(&mut self, ctx: &WorkerCtx<'_>, w: &[&str], say: &dyn Fn(&str)) -> Result<()> {
        let [spec @ .., mode, count, max_us, seq_base] = w else {
            return Err(err(format!("bad queue run {w:?}")));
        };
        let spec = EndSpec::parse(spec)?;
        let round = Round {
            mode: Mode::parse(mode)?,
            shape: spec.shape,
            count: count.parse()?,
            max: Duration::from_micros(max_us.parse()?),
            seq_base: seq_base.parse()?,
        };
        if self.acks.is_none() {
            self.acks = Some(ShmFile::open(&ctx.ack_path, ACK_FILE_LEN)?);
        }
        let acks = AckWords::of_file(self.acks.as_ref().expect("opened above"));
        let key = spec.to_words();
        let end = self
            .ends
            .get_mut(&key)
            .ok_or_else(|| err(format!("no open end {key}")))?;
        say("ready");
        match end.run(&round, spec.index, &acks) {
            Ok(outcome) => {
                say(&format!("done {}", outcome.to_words()));
                Ok(())
            }
            Err(e) => {
                // A failed end is not reused.
                self.ends.remove(&key);
                Err(err(format!("{} round: {e}", spec.transport)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            seq: 7,
            stamp_ns: 123_456_789,
            producer: 1,
            kind: KIND_STOP,
        };
        let mut buf = [0u8; 64];
        h.write(&mut buf);
        assert_eq!(Header::read(&buf).unwrap(), h);
        assert!(Header::read(&buf[..20]).is_err());
    }

    #[test]
    fn outcome_and_lines_round_trip() {
        let mut h = stats::new_histogram();
        for v in [100, 100, 2000, 150_000] {
            h.record(v).unwrap();
        }
        let o = Outcome::Consumed {
            count: 4,
            first_ns: 10,
            last_ns: 20,
            latency: Some(h),
        };
        let words: Vec<String> = o.to_words().split(' ').map(str::to_string).collect();
        let Outcome::Consumed {
            count,
            first_ns,
            last_ns,
            latency: Some(back),
        } = Outcome::parse(&words, Mode::Latency).unwrap()
        else {
            panic!("not a consumer outcome");
        };
        assert_eq!((count, first_ns, last_ns, back.len()), (4, 10, 20, 4));
        assert_eq!(back.value_at_quantile(0.5), 100);
        assert!(back.max() >= 150_000 && back.max() < 150_200);
        let words = vec!["p".to_string(), "9".to_string()];
        assert!(matches!(
            Outcome::parse(&words, Mode::Stream).unwrap(),
            Outcome::Produced { sent: 9 }
        ));
        let spec = EndSpec {
            transport: "ringbus".into(),
            payload: 64,
            shape: Shape {
                producers: 2,
                consumers: 2,
            },
            role: Role::Consumer,
            index: 1,
        };
        let line = spec.to_words();
        let w: Vec<&str> = line.split(' ').collect();
        assert_eq!(EndSpec::parse(&w).unwrap(), spec);
        assert_eq!(unhex(&hex(b"/tmp/a b")).unwrap(), b"/tmp/a b");
    }
}
