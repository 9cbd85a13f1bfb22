//! Helpers shared by the harness and its transports: errors, bounded spinning, the
//! timed receive and pipelined-call loops, CPU pinning, payload header access and the
//! shared-memory file used by `floor` and `futex`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};

use super::transport::StreamOutcome;

/// Error type of the harness: every failure is reported as text and aborts the run
/// (or drops one transport when it happens during setup).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with [`BoxError`].
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

/// Longest time one side waits for a single message (or connection) before giving up.
pub const MSG_TIMEOUT: Duration = Duration::from_secs(5);

/// Size of the header word the sender writes into every payload (a sequence number).
pub const HEADER_BYTES: usize = 8;

/// `s` as a positive integer: the value parser of the count flags (`--rounds`, `--msgs`,
/// `--trials`, ...).
pub fn positive(s: &str) -> std::result::Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a positive integer, got `{s}`")),
    }
}

/// [`positive`], as a `usize`.
pub fn positive_usize(s: &str) -> std::result::Result<usize, String> {
    positive(s).and_then(|n| usize::try_from(n).map_err(|e| e.to_string()))
}

/// Builds a [`BoxError`] from text.
pub fn err(msg: impl Into<String>) -> BoxError {
    msg.into().into()
}

/// Spins on `poll` until it yields a value. The clock is read only every 4096 polls,
/// so the fast path is a tight loop; fails after [`MSG_TIMEOUT`] without a value.
#[inline(always)]
pub fn spin_until<T>(what: &str, mut poll: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let mut spins: u32 = 0;
    let mut started: Option<Instant> = None;
    loop {
        if let Some(v) = poll()? {
            return Ok(v);
        }
        spins = spins.wrapping_add(1);
        if spins % 4096 == 0 {
            let t0 = *started.get_or_insert_with(Instant::now);
            if t0.elapsed() > MSG_TIMEOUT {
                return Err(err(format!(
                    "timed out after {MSG_TIMEOUT:?} waiting for {what}"
                )));
            }
        }
    }
}

/// Receives `count` messages with sequence numbers `first_seq..first_seq+count`:
/// `receive(seq)` waits for message `seq` and checks it. Returns the nanoseconds from the
/// first to the last message ([`StreamTimer`]).
#[inline(always)]
pub fn timed_receives(
    first_seq: u64,
    count: u64,
    mut receive: impl FnMut(u64) -> Result<()>,
) -> Result<u64> {
    let mut timer = StreamTimer::default();
    for i in 0..count {
        receive(first_seq + i)?;
        timer.received(i);
    }
    Ok(timer.finish())
}

/// Makes `count` pipelined calls with sequence numbers `first_seq..first_seq+count`,
/// keeping up to `window` in flight: `send(seq)` issues a call and returns its handle,
/// `wait(handle, seq)` waits for that call's response and checks it. Responses are
/// awaited in the order the calls were made (every transport answers in order). Returns
/// the calls timed from the first to the last response, as a [`StreamOutcome`].
#[inline(always)]
pub fn pipelined_calls<H>(
    first_seq: u64,
    count: u64,
    window: usize,
    mut send: impl FnMut(u64) -> Result<H>,
    mut wait: impl FnMut(H, u64) -> Result<()>,
) -> Result<StreamOutcome> {
    // First a tenth of the calls one after another (at most 2,000), timed each: the round
    // trip of this very round, to compare the pipelined rate with in the same machine state.
    let paired = (count / 10).min(2000);
    let mut rtts = Vec::with_capacity(paired as usize);
    for seq in first_seq..first_seq + paired {
        let t0 = Instant::now();
        let handle = send(seq)?;
        wait(handle, seq)?;
        rtts.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    rtts.sort_unstable();
    let rtt_p50_ns = rtts.get(rtts.len() / 2).copied();
    let (first_seq, count) = (first_seq + paired, count - paired);
    let mut in_flight: VecDeque<(H, u64)> = VecDeque::with_capacity(window);
    let end = first_seq + count;
    let mut next = first_seq;
    let mut timer = StreamTimer::default();
    while next < end && in_flight.len() < window {
        in_flight.push_back((send(next)?, next));
        next += 1;
    }
    for i in 0..count {
        let (handle, seq) = in_flight
            .pop_front()
            .ok_or_else(|| err("pipelined calls: no call in flight"))?;
        wait(handle, seq)?;
        timer.received(i);
        if next < end {
            in_flight.push_back((send(next)?, next));
            next += 1;
        }
    }
    Ok(StreamOutcome {
        count,
        elapsed_ns: timer.finish(),
        checksum: 0,
        rtt_p50_ns,
    })
}

/// Times a streaming receiver from its first to its last message. Only two clock reads
/// per round, so the per-message cost of the transport is not inflated.
#[derive(Default)]
pub struct StreamTimer {
    first: Option<Instant>,
}

impl StreamTimer {
    /// Call right after receiving message number `index` (0-based).
    #[inline(always)]
    pub fn received(&mut self, index: u64) {
        if index == 0 {
            self.first = Some(Instant::now());
        }
    }

    /// Call right after the last message: nanoseconds since the first one.
    pub fn finish(&self) -> u64 {
        self.first.map_or(0, |t| {
            u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
        })
    }
}

/// Writes the header word (`seq`) into the first [`HEADER_BYTES`] of `buf`.
#[inline(always)]
pub fn write_header(buf: &mut [u8], seq: u64) {
    buf[..HEADER_BYTES].copy_from_slice(&seq.to_ne_bytes());
}

/// Reads the header word from the first [`HEADER_BYTES`] of `buf`.
#[inline(always)]
pub fn read_header(buf: &[u8]) -> u64 {
    let mut word = [0u8; HEADER_BYTES];
    word.copy_from_slice(&buf[..HEADER_BYTES]);
    u64::from_ne_bytes(word)
}

/// Fills the payload as the sender of a message: only the header word, or (touch mode)
/// every byte followed by the header word.
#[inline(always)]
pub fn fill_payload(buf: &mut [u8], seq: u64, touch: bool) {
    if touch {
        buf.fill(seq as u8);
    }
    write_header(buf, seq);
}

/// Reads the payload as the receiver of a message: returns the header word and, in touch
/// mode, adds the sum of every byte to `checksum`.
#[inline(always)]
pub fn consume_payload(buf: &[u8], touch: bool, checksum: &mut u64) -> u64 {
    if touch {
        let sum: u64 = buf.iter().map(|&b| u64::from(b)).sum();
        *checksum = checksum.wrapping_add(std::hint::black_box(sum));
    }
    read_header(buf)
}

/// Fails unless `got` is the expected sequence number.
#[inline(always)]
pub fn check_seq(got: u64, expected: u64) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(err(format!(
            "sequence mismatch: got {got}, expected {expected}"
        )))
    }
}

/// CPUs the calling thread may run on, in ascending order.
pub fn allowed_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| set.is_set(c))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)
        .map_err(|e| err(format!("cannot pin thread to cpu {cpu}: {e}")))
}

/// A small file mapped shared into both processes (used by `floor` and `futex`).
///
/// The creating side removes the file when dropped.
pub struct ShmFile {
    map: MmapRaw,
    owned_path: Option<PathBuf>,
}

impl ShmFile {
    /// Creates (truncating any stale file) and maps a zero-filled file of `len` bytes.
    pub fn create(path: &Path, len: usize) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| err(format!("cannot create {}: {e}", path.display())))?;
        file.set_len(len as u64)?;
        let map = Self::map(&file, len)?;
        Ok(Self {
            map,
            owned_path: Some(path.to_path_buf()),
        })
    }

    /// Maps an existing file created by the peer.
    pub fn open(path: &Path, len: usize) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| err(format!("cannot open {}: {e}", path.display())))?;
        let actual = file.metadata()?.len();
        if actual < len as u64 {
            return Err(err(format!("{} is too short", path.display())));
        }
        let map = Self::map(&file, len)?;
        Ok(Self {
            map,
            owned_path: None,
        })
    }

    fn map(file: &File, len: usize) -> Result<MmapRaw> {
        Ok(MmapOptions::new().len(len).map_raw(file)?)
    }

    /// The 8-byte aligned word at byte offset `off`, viewed as an atomic.
    pub fn word(&self, off: usize) -> &AtomicU64 {
        let ptr = self.word_ptr(off, 8);
        // SAFETY: `word_ptr` checked that `ptr` is inside the mapping and 8-byte aligned (the
        // mapping is page aligned), so it is valid and aligned for an AtomicU64. The mapping
        // lives as long as `self`, which bounds the returned lifetime. The memory is shared
        // with the peer process, which also accesses these words only through atomics, and
        // AtomicU64 has the same layout as u64 with no invalid bit patterns.
        unsafe { &*ptr.cast::<AtomicU64>() }
    }

    /// The 4-byte aligned word at byte offset `off`, viewed as an atomic (a futex word).
    pub fn word32(&self, off: usize) -> &AtomicU32 {
        let ptr = self.word_ptr(off, 4);
        // SAFETY: as in `word`, with a 4-byte aligned word and AtomicU32 (same layout as u32,
        // no invalid bit patterns); the peer accesses it only through atomics and futex calls.
        unsafe { &*ptr.cast::<AtomicU32>() }
    }

    /// Pointer to the `size`-byte word at `off`; panics unless it is aligned to `size` and
    /// lies inside the mapping.
    fn word_ptr(&self, off: usize, size: usize) -> *mut u8 {
        assert!(
            off % size == 0 && off + size <= self.map.len(),
            "bad {size}-byte word offset {off}"
        );
        self.map.as_mut_ptr().wrapping_add(off)
    }
}

impl Drop for ShmFile {
    fn drop(&mut self) {
        if let Some(path) = &self.owned_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_accepts_only_positive_integers() {
        assert_eq!(positive("3"), Ok(3));
        assert_eq!(positive_usize(" 64"), Ok(64));
        assert_eq!(
            positive("0").unwrap_err(),
            "expected a positive integer, got `0`"
        );
        assert!(positive("-1").is_err());
        assert!(positive("x").is_err());
        assert!(positive("").is_err());
    }

    #[test]
    fn a_latency_round_records_all_but_its_warmup() {
        let mut hist = crate::bench::stats::new_histogram();
        let mut seen = Vec::new();
        let round = super::super::transport::LatencyRound {
            count: 10,
            warmup: 3,
            touch: false,
            hist: &mut hist,
        };
        let n = round
            .time(5, |seq| {
                seen.push(seq);
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 10);
        assert_eq!(seen, (5..15).collect::<Vec<u64>>());
        assert_eq!(hist.len(), 7);
        let mut calls = 0;
        let round = super::super::transport::LatencyRound {
            count: 10,
            warmup: 0,
            touch: false,
            hist: &mut hist,
        };
        assert!(round
            .time(1, |seq| {
                calls += 1;
                check_seq(seq, 1)
            })
            .is_err());
        assert_eq!(calls, 2, "a failed round trip ends the round");
    }

    #[test]
    fn pipelined_calls_keep_the_window_and_answer_in_order() {
        use std::cell::Cell;
        let outstanding = Cell::new(0usize);
        let max_outstanding = Cell::new(0usize);
        let mut waited = Vec::new();
        let outcome = pipelined_calls(
            5,
            40,
            16,
            |seq| {
                outstanding.set(outstanding.get() + 1);
                max_outstanding.set(max_outstanding.get().max(outstanding.get()));
                Ok(seq * 10)
            },
            |handle, seq| {
                outstanding.set(outstanding.get() - 1);
                assert_eq!(handle, seq * 10);
                waited.push(seq);
                Ok(())
            },
        )
        .unwrap();
        // A tenth of the calls go one by one first (timed), the rest pipelined.
        assert_eq!(outcome.count, 36);
        assert!(outcome.rtt_p50_ns.is_some());
        assert_eq!(waited, (5..45).collect::<Vec<u64>>());
        assert_eq!((outstanding.get(), max_outstanding.get()), (0, 16));
        // Fewer calls than the window; a wrong response fails the round.
        let outcome = pipelined_calls(1, 3, 16, Ok, check_seq).unwrap();
        assert_eq!((outcome.count, outcome.rtt_p50_ns), (3, None));
        assert!(pipelined_calls(1, 3, 16, |s| Ok(s + 1), check_seq).is_err());
    }
}
