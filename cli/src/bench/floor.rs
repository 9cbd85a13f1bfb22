//! `floor`: the physical minimum for cross-process messaging on this machine.
//!
//! A 4 KiB file in the run directory is mapped by both processes.
//!
//! * Latency (`pubsub` and `rpc`): ping stores sequence number `n` into the ping word,
//!   pong spins until it sees `n` and stores `n` into the pong word; ping spins until it
//!   sees `n`. Both words share one cache line (see `PONG_OFF`). No payload is copied
//!   (the request "carries" its payload only in name, as with `--touch` off elsewhere);
//!   the spin loops use no pause instruction. For `rpc` this is already the round trip
//!   of a request and its 8-byte response (the echoed sequence number).
//! * Stream, `pubsub`: a single-producer single-consumer ring of
//!   [`super::STREAM_CAPACITY`] header words (head and tail counters on their own
//!   128-byte blocks, indices cached locally). No payload is copied either.
//! * Stream, `rpc` (pipelined calls): two such rings of [`RPC_WINDOW`] words, requests
//!   (ping to pong) and responses (pong to ping, the echoed sequence number); the client
//!   keeps up to [`RPC_WINDOW`] calls in flight.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use super::transport::{
    no_queue, wrong_mode, LatencyRound, Mode, Pattern, PingEnd, PongEnd, Setup, StreamOutcome,
    Transport, RPC_WINDOW,
};
use super::util::{check_seq, pipelined_calls, spin_until, timed_receives, Result, ShmFile};
use super::STREAM_CAPACITY;

/// Length of the shared file.
const FILE_LEN: usize = 4096;
/// Offset of the word ping writes (latency mode).
const PING_OFF: usize = 0;
/// Offset of the word pong writes (latency mode): the same 64-byte cache line as the
/// ping word. Measured interleaved on the 2-vCPU VM, one shared line gave a 10-25 %
/// lower round trip than two words 128 bytes apart.
const PONG_OFF: usize = 8;

/// Where a ring lives in the file: producer counter, consumer counter, slots.
#[derive(Clone, Copy)]
struct RingLayout {
    head: usize,
    tail: usize,
    slots: usize,
    cap: u64,
}

/// The `pubsub` stream ring.
const STREAM_RING: RingLayout = RingLayout {
    head: 0,
    tail: 128,
    slots: 256,
    cap: STREAM_CAPACITY as u64,
};
/// The `rpc` request ring (client to server).
const REQUEST_RING: RingLayout = RingLayout {
    head: 0,
    tail: 128,
    slots: 256,
    cap: RPC_WINDOW as u64,
};
/// The `rpc` response ring (server to client), after the request ring's slots.
const RESPONSE_RING: RingLayout = RingLayout {
    head: 1024,
    tail: 1152,
    slots: 1280,
    cap: RPC_WINDOW as u64,
};

/// The `floor` transport.
pub struct Floor;

impl Transport for Floor {
    fn name(&self) -> &'static str {
        "floor"
    }

    fn ping(&self, setup: &Setup) -> Result<Box<dyn PingEnd>> {
        let shm = ShmFile::create(&setup.resource_path("floor", ""), FILE_LEN)?;
        Ok(Box::new(FloorEnd::new(shm, setup)))
    }

    fn pong(&self, setup: &Setup) -> Result<Box<dyn PongEnd>> {
        let shm = ShmFile::open(&setup.resource_path("floor", ""), FILE_LEN)?;
        Ok(Box::new(FloorEnd::new(shm, setup)))
    }
}

/// One side's private counters of a ring.
#[derive(Default)]
struct RingState {
    /// This side's own counter (head for the sender, tail for the receiver).
    own: u64,
    /// Last seen value of the other side's counter.
    other_cache: u64,
}

/// A ring as seen by one side during a round.
struct Ring<'a> {
    shm: &'a ShmFile,
    layout: RingLayout,
    head: &'a AtomicU64,
    tail: &'a AtomicU64,
    state: &'a mut RingState,
}

impl<'a> Ring<'a> {
    fn new(shm: &'a ShmFile, layout: RingLayout, state: &'a mut RingState) -> Self {
        Self {
            shm,
            layout,
            head: shm.word(layout.head),
            tail: shm.word(layout.tail),
            state,
        }
    }

    #[inline(always)]
    fn slot(&self, index: u64) -> &AtomicU64 {
        self.shm
            .word(self.layout.slots + 8 * (index % self.layout.cap) as usize)
    }

    /// Sender side: waits for space, then publishes `value`.
    #[inline(always)]
    fn push(&mut self, value: u64) -> Result<()> {
        let cap = self.layout.cap;
        if self.state.own - self.state.other_cache >= cap {
            let (own, tail) = (self.state.own, self.tail);
            self.state.other_cache = spin_until("floor ring space", || {
                // Acquire: the receiver's Release store of tail follows its read of
                // the slot, so the slot may be overwritten after this load.
                let t = tail.load(Acquire);
                Ok((own - t < cap).then_some(t))
            })?;
        }
        // Relaxed: the slot is published by the Release store of head below.
        self.slot(self.state.own).store(value, Relaxed);
        self.state.own += 1;
        // Release: makes the slot store visible before the new head.
        self.head.store(self.state.own, Release);
        Ok(())
    }

    /// Receiver side: waits for a value and takes it.
    #[inline(always)]
    fn pop(&mut self, what: &str) -> Result<u64> {
        if self.state.other_cache == self.state.own {
            let (own, head) = (self.state.own, self.head);
            self.state.other_cache = spin_until(what, || {
                // Acquire: pairs with the sender's Release store of head, making the
                // slot contents visible.
                let h = head.load(Acquire);
                Ok((h != own).then_some(h))
            })?;
        }
        // Relaxed: ordered after the Acquire load of head above.
        let got = self.slot(self.state.own).load(Relaxed);
        self.state.own += 1;
        // Release: the slot read above happens before the sender may reuse the slot.
        self.tail.store(self.state.own, Release);
        Ok(got)
    }
}

/// Either end of `floor`; each process only ever uses the half of the state that
/// belongs to its role.
struct FloorEnd {
    shm: ShmFile,
    pattern: Pattern,
    mode: Mode,
    /// Last sequence number sent (ping) or received (pong), over all rounds.
    seq: u64,
    /// Stream ring (`pubsub`) or request ring (`rpc`).
    ring: RingState,
    /// Response ring (`rpc` only).
    responses: RingState,
}

impl FloorEnd {
    fn new(shm: ShmFile, setup: &Setup) -> Self {
        Self {
            shm,
            pattern: setup.pattern,
            mode: setup.mode,
            seq: 0,
            ring: RingState::default(),
            responses: RingState::default(),
        }
    }
}

impl PingEnd for FloorEnd {
    fn latency_round(&mut self, round: LatencyRound<'_>) -> Result<()> {
        if self.mode != Mode::Latency {
            return Err(wrong_mode("floor", self.mode));
        }
        let ping = self.shm.word(PING_OFF);
        let pong = self.shm.word(PONG_OFF);
        self.seq += round.time(self.seq + 1, |seq| {
            // Release/Acquire (not SeqCst): a real transport publishes its payload this
            // way, and on x86 both are plain moves, so the floor pays no fence.
            ping.store(seq, Release);
            spin_until("floor pong", || {
                Ok((pong.load(Acquire) == seq).then_some(()))
            })
        })?;
        Ok(())
    }

    fn stream_send(&mut self, count: u64, _touch: bool) -> Result<Option<StreamOutcome>> {
        if self.mode != Mode::Stream {
            return Err(wrong_mode("floor", self.mode));
        }
        let first = self.seq + 1;
        let outcome = match self.pattern {
            Pattern::PubSub => {
                let mut ring = Ring::new(&self.shm, STREAM_RING, &mut self.ring);
                for seq in first..first + count {
                    ring.push(seq)?;
                }
                None
            }
            Pattern::Queue => return Err(no_queue("floor")),
            Pattern::Rpc => {
                // Two closures use the two rings: each gets its own view.
                let mut requests = Ring::new(&self.shm, REQUEST_RING, &mut self.ring);
                let mut responses = Ring::new(&self.shm, RESPONSE_RING, &mut self.responses);
                Some(pipelined_calls(
                    first,
                    count,
                    RPC_WINDOW,
                    |seq| requests.push(seq),
                    |(), seq| check_seq(responses.pop("floor response")?, seq),
                )?)
            }
        };
        self.seq += count;
        Ok(outcome)
    }
}

impl PongEnd for FloorEnd {
    fn latency_serve(&mut self, count: u64, _touch: bool) -> Result<u64> {
        if self.mode != Mode::Latency {
            return Err(wrong_mode("floor", self.mode));
        }
        let ping = self.shm.word(PING_OFF);
        let pong = self.shm.word(PONG_OFF);
        for _ in 0..count {
            let expected = self.seq + 1;
            // Acquire/Release (not SeqCst): pairs with the ping side; see latency_round.
            spin_until("floor ping", || {
                Ok((ping.load(Acquire) == expected).then_some(()))
            })?;
            pong.store(expected, Release);
            self.seq = expected;
        }
        Ok(0)
    }

    fn stream_receive(&mut self, count: u64, _touch: bool) -> Result<StreamOutcome> {
        if self.mode != Mode::Stream {
            return Err(wrong_mode("floor", self.mode));
        }
        let first = self.seq + 1;
        let elapsed_ns = match self.pattern {
            Pattern::Queue => return Err(no_queue("floor")),
            Pattern::PubSub => {
                let mut ring = Ring::new(&self.shm, STREAM_RING, &mut self.ring);
                timed_receives(first, count, |seq| {
                    check_seq(ring.pop("floor ring message")?, seq)
                })?
            }
            Pattern::Rpc => {
                let mut requests = Ring::new(&self.shm, REQUEST_RING, &mut self.ring);
                let mut responses = Ring::new(&self.shm, RESPONSE_RING, &mut self.responses);
                for expected in first..first + count {
                    let seq = requests.pop("floor request")?;
                    check_seq(seq, expected)?;
                    responses.push(seq)?;
                }
                0
            }
        };
        self.seq += count;
        Ok(StreamOutcome::received(count, elapsed_ns, 0))
    }
}
