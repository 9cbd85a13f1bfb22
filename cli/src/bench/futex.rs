//! `futex`: the kernel-wake floor, i.e. the reference for `ringbus-blocking`.
//!
//! A 4 KiB file in the run directory is mapped by both processes (as for `floor`). It
//! holds two 32-bit futex words on separate 128-byte blocks: the ping word at
//! `PING_OFF` and the pong word at `PONG_OFF`.
//!
//! * Latency: ping stores sequence number `n` (truncated to 32 bits) into the ping word
//!   and calls `FUTEX_WAKE(ping word, 1)`, then waits until the pong word holds `n`; pong
//!   mirrors it. Waiting never spins: every time the word does not hold `n` yet, the
//!   waiter calls `FUTEX_WAIT` with the value it observed, like a minimal blocking
//!   receiver. Wakes are unconditional (there is no "someone is sleeping" flag), so each
//!   message costs one wake syscall and usually one wait. The futexes are shared (not
//!   `FUTEX_PRIVATE_FLAG`), like ringbus's. No payload is copied: only the sequence word
//!   moves, whatever the payload size.
//! * Stream: not supported (the transport is a latency reference only).
//!
//! The same exchange serves `pubsub` and `rpc`: it is a round trip either way (for `rpc`
//! the request's payload lives only in name, as for `floor`; the response is the echoed
//! sequence number).

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::time::Instant;

use super::transport::{
    wrong_mode, LatencyRound, Mode, Pattern, PingEnd, PongEnd, Setup, StreamOutcome, Transport,
};
use super::util::{err, Result, ShmFile, MSG_TIMEOUT};

/// Shared (not `FUTEX_PRIVATE_FLAG`) futex calls on a word of the mapped file, as ringbus's own
/// waits make them (its futex module is not public API, so the harness calls the kernel itself).
mod kernel {
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    use rustix::thread::futex::{self, Flags};

    /// Sleeps while `*word == expected`, for at most `timeout`; callers recheck the word.
    pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
        let ts = rustix::time::Timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        // EAGAIN (the value changed), ETIMEDOUT and EINTR all mean "recheck", which callers do.
        let _ = futex::wait(word, Flags::empty(), expected, Some(&ts));
    }

    /// Wakes at most `n` waiters on `word`.
    pub fn wake(word: &AtomicU32, n: u32) {
        let _ = futex::wake(word, Flags::empty(), n);
    }
}

/// Length of the shared file.
const FILE_LEN: usize = 4096;
/// Offset of the word ping writes and pong waits on.
const PING_OFF: usize = 0;
/// Offset of the word pong writes and ping waits on: its own 128-byte block, so a waker
/// does not touch the line the other side's futex word lives on.
const PONG_OFF: usize = 128;

/// The `futex` transport.
pub struct Futex;

impl Transport for Futex {
    fn name(&self) -> &'static str {
        "futex"
    }

    fn supports(&self, pattern: Pattern, mode: Mode) -> bool {
        pattern != Pattern::Queue && mode == Mode::Latency
    }

    fn ping(&self, setup: &Setup) -> Result<Box<dyn PingEnd>> {
        let shm = ShmFile::create(&setup.resource_path("futex", ""), FILE_LEN)?;
        Ok(Box::new(FutexEnd::new(shm, setup.mode)))
    }

    fn pong(&self, setup: &Setup) -> Result<Box<dyn PongEnd>> {
        let shm = ShmFile::open(&setup.resource_path("futex", ""), FILE_LEN)?;
        Ok(Box::new(FutexEnd::new(shm, setup.mode)))
    }
}

/// Either end of `futex`.
struct FutexEnd {
    shm: ShmFile,
    mode: Mode,
    /// Last sequence number sent (ping) or received (pong), over all rounds.
    seq: u64,
}

impl FutexEnd {
    fn new(shm: ShmFile, mode: Mode) -> Self {
        Self { shm, mode, seq: 0 }
    }

    fn check_latency(&self) -> Result<()> {
        if self.mode == Mode::Latency {
            Ok(())
        } else {
            Err(wrong_mode("futex", self.mode))
        }
    }
}

/// Error for a streaming call ([`Futex::supports`] excludes streaming rounds).
fn no_stream() -> super::util::BoxError {
    err("futex: streaming rounds are not supported")
}

/// The value `seq` has in a 32-bit futex word. Truncation is fine: consecutive values
/// always differ, and each side only waits for the next one.
#[inline(always)]
fn word_value(seq: u64) -> u32 {
    seq as u32
}

/// Publishes `value` in `word` and wakes one waiter on it.
#[inline(always)]
fn post(word: &AtomicU32, value: u32) {
    // Release (not SeqCst): pairs with the peer's Acquire load in `wait_for`, as a real
    // transport publishes its payload. The peer's lost-wakeup safety does not depend on
    // the ordering: FUTEX_WAIT rechecks the word in the kernel, and the wake below is
    // unconditional and issued after the store.
    word.store(value, Release);
    kernel::wake(word, 1);
}

/// Sleeps in the kernel until `word` holds `value`; fails after [`MSG_TIMEOUT`].
#[inline(always)]
fn wait_for(word: &AtomicU32, value: u32, what: &str) -> Result<()> {
    let mut deadline: Option<Instant> = None;
    loop {
        // Acquire (not SeqCst): pairs with the peer's Release store in `post`.
        let observed = word.load(Acquire);
        if observed == value {
            return Ok(());
        }
        let now = Instant::now();
        let deadline = *deadline.get_or_insert(now + MSG_TIMEOUT);
        if now >= deadline {
            return Err(err(format!(
                "timed out after {MSG_TIMEOUT:?} waiting for {what}"
            )));
        }
        kernel::wait(word, observed, deadline - now);
    }
}

impl PingEnd for FutexEnd {
    fn latency_round(&mut self, round: LatencyRound<'_>) -> Result<()> {
        self.check_latency()?;
        let ping = self.shm.word32(PING_OFF);
        let pong = self.shm.word32(PONG_OFF);
        self.seq += round.time(self.seq + 1, |seq| {
            post(ping, word_value(seq));
            wait_for(pong, word_value(seq), "futex pong")
        })?;
        Ok(())
    }

    fn stream_send(&mut self, _count: u64, _touch: bool) -> Result<Option<StreamOutcome>> {
        Err(no_stream())
    }
}

impl PongEnd for FutexEnd {
    fn latency_serve(&mut self, count: u64, _touch: bool) -> Result<u64> {
        self.check_latency()?;
        let ping = self.shm.word32(PING_OFF);
        let pong = self.shm.word32(PONG_OFF);
        for _ in 0..count {
            let expected = word_value(self.seq + 1);
            wait_for(ping, expected, "futex ping")?;
            post(pong, expected);
            self.seq += 1;
        }
        Ok(0)
    }

    fn stream_receive(&mut self, _count: u64, _touch: bool) -> Result<StreamOutcome> {
        Err(no_stream())
    }
}
