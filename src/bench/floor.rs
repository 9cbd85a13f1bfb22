//! `floor`: the physical minimum for cross-process messaging on this machine.
//!
//! A 4 KiB file in the run directory is mapped by both processes.
//!
//! * Latency: ping stores sequence number `n` into the ping word, pong spins until it
//!   sees `n` and stores `n` into the pong word; ping spins until it sees `n`. Both
//!   words share one cache line (see `PONG_OFF`). No payload is copied; the spin
//!   loops use no pause instruction.
//! * Stream: a single-producer single-consumer ring of [`super::STREAM_CAPACITY`] header
//!   words (head and tail counters on their own 128-byte blocks, indices cached locally).
//!   No payload is copied either.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use hdrhistogram::Histogram;

use super::transport::{
    wrong_mode, Mode, Pattern, PingEnd, PongEnd, Setup, StreamOutcome, Transport,
};
use super::util::{check_seq, spin_until, timed_round_trips, Result, ShmFile, StreamTimer};
use super::STREAM_CAPACITY;

/// Length of the shared file.
const FILE_LEN: usize = 4096;
/// Offset of the word ping writes (latency mode).
const PING_OFF: usize = 0;
/// Offset of the word pong writes (latency mode): the same 64-byte cache line as the
/// ping word. Measured interleaved on the 2-vCPU VM, one shared line gave a 10-25 %
/// lower round trip than two words 128 bytes apart.
const PONG_OFF: usize = 8;
/// Stream ring: producer counter, consumer counter, slots.
const HEAD_OFF: usize = 0;
const TAIL_OFF: usize = 128;
const SLOTS_OFF: usize = 256;
const CAP: u64 = STREAM_CAPACITY as u64;

/// The `floor` transport.
pub struct Floor;

impl Transport for Floor {
    fn name(&self) -> &'static str {
        "floor"
    }

    fn supports(&self, _pattern: Pattern, _mode: Mode) -> bool {
        true
    }

    fn ping(&self, setup: &Setup) -> Result<Box<dyn PingEnd>> {
        let shm = ShmFile::create(&setup.resource_path("floor", ""), FILE_LEN)?;
        Ok(Box::new(FloorEnd::new(shm, setup.mode)))
    }

    fn pong(&self, setup: &Setup) -> Result<Box<dyn PongEnd>> {
        let shm = ShmFile::open(&setup.resource_path("floor", ""), FILE_LEN)?;
        Ok(Box::new(FloorEnd::new(shm, setup.mode)))
    }
}

/// Either end of `floor`; each process only ever uses the half of the state that
/// belongs to its role.
struct FloorEnd {
    shm: ShmFile,
    mode: Mode,
    /// Last sequence number sent (ping) or received (pong), over all rounds.
    seq: u64,
    /// Stream ring: this side's own counter (head for the sender, tail for the receiver).
    own: u64,
    /// Stream ring: last seen value of the other side's counter.
    other_cache: u64,
}

impl FloorEnd {
    fn new(shm: ShmFile, mode: Mode) -> Self {
        Self {
            shm,
            mode,
            seq: 0,
            own: 0,
            other_cache: 0,
        }
    }

    fn slot(&self, index: u64) -> &AtomicU64 {
        self.shm.word(SLOTS_OFF + 8 * (index % CAP) as usize)
    }
}

impl PingEnd for FloorEnd {
    fn latency_round(
        &mut self,
        count: u64,
        warmup: u64,
        _touch: bool,
        hist: &mut Histogram<u64>,
    ) -> Result<()> {
        if self.mode != Mode::Latency {
            return Err(wrong_mode("floor", self.mode));
        }
        let ping = self.shm.word(PING_OFF);
        let pong = self.shm.word(PONG_OFF);
        timed_round_trips(self.seq + 1, count, warmup, hist, |seq| {
            // Release/Acquire (not SeqCst): a real transport publishes its payload this
            // way, and on x86 both are plain moves, so the floor pays no fence.
            ping.store(seq, Release);
            spin_until("floor pong", || {
                Ok((pong.load(Acquire) == seq).then_some(()))
            })
        })?;
        self.seq += count;
        Ok(())
    }

    fn stream_send(&mut self, count: u64, _touch: bool) -> Result<()> {
        if self.mode != Mode::Stream {
            return Err(wrong_mode("floor", self.mode));
        }
        let head = self.shm.word(HEAD_OFF);
        let tail = self.shm.word(TAIL_OFF);
        for _ in 0..count {
            if self.own - self.other_cache >= CAP {
                let own = self.own;
                self.other_cache = spin_until("floor ring space", || {
                    // Acquire: the receiver's Release store of tail follows its read of
                    // the slot, so the slot may be overwritten after this load.
                    let t = tail.load(Acquire);
                    Ok((own - t < CAP).then_some(t))
                })?;
            }
            self.seq += 1;
            // Relaxed: the slot is published by the Release store of head below.
            self.slot(self.own).store(self.seq, Relaxed);
            self.own += 1;
            // Release: makes the slot store visible before the new head.
            head.store(self.own, Release);
        }
        Ok(())
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
        let head = self.shm.word(HEAD_OFF);
        let tail = self.shm.word(TAIL_OFF);
        let mut timer = StreamTimer::default();
        for i in 0..count {
            if self.other_cache == self.own {
                let own = self.own;
                self.other_cache = spin_until("floor ring message", || {
                    // Acquire: pairs with the sender's Release store of head, making the
                    // slot contents visible.
                    let h = head.load(Acquire);
                    Ok((h != own).then_some(h))
                })?;
            }
            // Relaxed: ordered after the Acquire load of head above.
            let got = self.slot(self.own).load(Relaxed);
            check_seq(got, self.seq + 1)?;
            self.seq = got;
            self.own += 1;
            // Release: the slot read above happens before the sender may reuse the slot.
            tail.store(self.own, Release);
            timer.received(i);
        }
        Ok(StreamOutcome {
            count,
            elapsed_ns: timer.finish(),
            checksum: 0,
        })
    }
}
