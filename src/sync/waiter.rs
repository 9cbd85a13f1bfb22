//! The per-process waiter: lets futures wait on doorbells of shared segments without a blocked
//! thread per future.
//!
//! A future that finds nothing to receive arms its doorbell ([`Doorbell::arm`]), rechecks, and
//! registers `(word, seen, nap, waker)` through its [`Registration`]. A waiter thread sleeps on
//! every registered word at once with `futex_waitv` (Linux ≥ 5.16), plus a private control word
//! that registration changes bump ([`super::watch`]: the handshake, its invariants and its loom
//! model). When the wait ends, the thread fires (wakes and unregisters) every registration whose
//! word moved from `seen` or whose nap passed; the woken future polls again and registers again
//! if it must wait again. Registrations are one-shot.
//!
//! - Threads: one per [`PER_THREAD`] registrations (`futex_waitv` takes at most 128 words; one is
//!   the control word), started lazily and kept for the life of the process. A registration keeps
//!   its thread for its life.
//! - No allocation per wait once a future holds a registration: its slot in the thread's table is
//!   re-armed in place ([`Registration::arm`]); waking clones the waker (a reference count for
//!   common executors).
//! - Cancel safety: dropping a [`Registration`] clears its slot under the table lock; after that
//!   the thread never reads its word (watch invariant 4). Every future has its own registration
//!   and its own doorbell bit, so removing one never unregisters another.
//! - `fork`: a child starts its own waiter threads at its first registration (the parent's are
//!   not copied); a future that was waiting at the fork must not be polled in the child, whose
//!   copy of its registration has no thread behind it.
//! - Fallback: where `futex_waitv` is missing (`ENOSYS`) or refused (a seccomp filter), the
//!   thread sleeps on its control word alone and polls the registered words every
//!   [`POLL_NAP`]: a wake is then late by up to a millisecond, and an idle process with a
//!   registered future wakes a thousand times a second (a few microseconds each).


use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Waker;
use std::time::{Duration, Instant};

use rustix::thread::futex;

use super::doorbell::Doorbell;
use super::watch::WatchTable;

/// Most futex words one `futex_waitv` call takes (`FUTEX_WAITV_MAX`).
const WAITV_MAX: usize = 128;
/// Registrations one waiter thread holds: all its words but the control word.
pub(crate) const PER_THREAD: usize = WAITV_MAX - 1;
/// How often the fallback (no `futex_waitv`) polls the registered words.
pub(crate) const POLL_NAP: Duration = Duration::from_millis(1);
/// A wait with nothing registered: only the control word can end it.
const IDLE: Duration = Duration::from_secs(3600);

/// Registrations alive in this process (for tests: all are gone once their futures are).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// How many waiter registrations are alive in this process (futures waiting, or holding a slot to
/// wait again). Zero once every receiving future is dropped or done.
pub fn live_registrations() -> usize {
    // Relaxed: a count for tests, read after the futures it counts are gone.
    LIVE.load(Ordering::Relaxed)
}

/// One slot of a waiter thread's table.
struct Entry {
    /// The watched futex word; valid while `keep` is held (watch invariant 5).
    word: *const AtomicU32,
    /// Keeps the mapping of `word` alive.
    keep: Option<Arc<dyn Send + Sync>>,
    /// Registered: the thread watches `word` for a change from `seen` until `deadline`.
    armed: bool,
    seen: u32,
    deadline: Instant,
    waker: Option<Waker>,
}

// SAFETY: `word` points to an atomic (itself Sync) in a mapping that `keep` (Send + Sync) keeps
// alive; the entry is only reached under its table's lock.
unsafe impl Send for Entry {}

impl Entry {
    fn vacant() -> Entry {
        Entry {
            word: std::ptr::null(),
            keep: None,
            armed: false,
            seen: 0,
            deadline: Instant::now(),
            waker: None,
        }
    }
}

/// A waiter thread's registrations.
struct Table {
    entries: Vec<Entry>,
    free: Vec<usize>,
}

type Shard = WatchTable<Table>;

/// The process's waiter threads, one table each, and the process they were started in (a child
/// made by `fork` inherits the tables but not the threads: it starts its own).
static SHARDS: OnceLock<Mutex<(u32, Vec<Arc<Shard>>)>> = OnceLock::new();

/// A future's slot in a waiter thread's table (module doc). Dropping it unregisters.
pub(crate) struct Registration {
    shard: Arc<Shard>,
    id: usize,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("id", &self.id).finish()
    }
}

impl Registration {
    /// A slot watching `word`, unarmed.
    ///
    /// # Safety
    /// `word` must stay valid (mapped) while `keep` is alive.
    pub(crate) unsafe fn new(word: &AtomicU32, keep: Arc<dyn Send + Sync>) -> Registration {
        let shards = SHARDS.get_or_init(|| Mutex::new((std::process::id(), Vec::new())));
        let mut guard = shards.lock().unwrap_or_else(|e| e.into_inner());
        let (pid, shards) = &mut *guard;
        if *pid != std::process::id() {
            // Forked: the parent's threads are not here. Their tables are left alone (another
            // thread of the parent may have held their locks at the fork).
            std::mem::forget(std::mem::take(shards));
            *pid = std::process::id();
        }
        let mut keep = Some(keep);
        for shard in shards.iter() {
            // SAFETY: the caller's contract.
            if let Some(reg) = unsafe { Registration::place(shard, word, &mut keep) } {
                return reg;
            }
        }
        let shard = start(true);
        shards.push(shard.clone());
        // SAFETY: the caller's contract.
        unsafe { Registration::place(&shard, word, &mut keep) }.expect("a new table has room")
    }

    /// A slot of `shard` watching `word`, if it has room (then `keep` is taken).
    ///
    /// # Safety
    /// As [`Registration::new`].
    unsafe fn place(
        shard: &Arc<Shard>,
        word: &AtomicU32,
        keep: &mut Option<Arc<dyn Send + Sync>>,
    ) -> Option<Registration> {
        let mut id = None;
        // No bump: the new slot is unarmed, so the thread has nothing new to watch.
        shard.change(|t| {
            if let Some(i) = t.free.pop() {
                let e = &mut t.entries[i];
                e.word = word;
                e.keep = keep.take();
                id = Some(i);
            }
            false
        });
        let id = id?;
        // Relaxed: a count for tests.
        LIVE.fetch_add(1, Ordering::Relaxed);
        Some(Registration {
            shard: shard.clone(),
            id,
        })
    }

    /// Registers: `waker` is woken once the word differs from `seen`, or after `nap`.
    pub(crate) fn arm(&self, seen: u32, nap: Duration, waker: &Waker) {
        let now = Instant::now();
        let deadline = now.checked_add(nap).unwrap_or(now + IDLE);
        let mut old = None;
        self.shard.change(|t| {
            let e = &mut t.entries[self.id];
            e.armed = true;
            e.seen = seen;
            e.deadline = deadline;
            if !e.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                old = e.waker.replace(waker.clone());
            }
            true
        });
        // Dropped outside the lock: the last reference to a task may drop a future that holds
        // a registration of this same table.
        drop(old);
    }

    /// Unregisters if registered (the slot stays this future's).
    pub(crate) fn disarm(&self) {
        let mut old = None;
        self.shard.change(|t| {
            let e = &mut t.entries[self.id];
            old = e.waker.take();
            // Bumped only if the thread watched the word: it then stops watching it at once.
            std::mem::replace(&mut e.armed, false)
        });
        // Outside the lock, as in `arm`.
        drop(old);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut old = (None, None);
        self.shard.change(|t| {
            let e = &mut t.entries[self.id];
            let was = std::mem::replace(&mut e.armed, false);
            old = (e.waker.take(), e.keep.take());
            e.word = std::ptr::null();
            t.free.push(self.id);
            was
        });
        // Outside the lock, as in `arm` (the last reference to a segment unmaps it).
        drop(old);
        // Relaxed: a count for tests.
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a waiting future keeps between polls: how long it may spin before it parks, whether its
/// doorbell bit is armed, and its registration (made at its first wait, re-armed at the next
/// ones).
///
/// The spin is cooperative: a future that finds nothing within its spin wakes itself and
/// returns `Pending`, so the executor polls it again after the other ready tasks instead of the
/// future holding its thread. Only once the spin has passed does it arm the doorbell and
/// register. A future spins once, from its first wait: a wake from the waiter that finds
/// nothing (a nap, or a ring for another bit) parks again at once.
#[derive(Debug, Default)]
pub(crate) struct Parking {
    reg: Option<Registration>,
    armed: bool,
    spin: Duration,
    /// The end of the spin, set at the first wait.
    spin_until: Option<Instant>,
}

impl Parking {
    /// A future's parking that spins for `spin` (zero: parks at its first wait).
    pub(crate) fn new(spin: Duration) -> Parking {
        Parking {
            spin,
            ..Parking::default()
        }
    }

    /// The wait of a future that found nothing: spins (wakes itself, `None`) until its spin has
    /// passed; then arms `bell` for member `bit`, runs `recheck` (Some: done, the bit disarmed)
    /// and otherwise registers with the armed value and nap, to wake `waker` (None: return
    /// Pending). `keep` owns the mapping of the bell's word.
    pub(crate) fn park<T>(
        &mut self,
        bell: Doorbell<'_>,
        bit: usize,
        nap: Duration,
        keep: impl FnOnce() -> Arc<dyn Send + Sync>,
        waker: &Waker,
        recheck: impl FnOnce() -> Option<T>,
    ) -> Option<T> {
        let got = self.park_sharing(bell, bit, nap, keep, waker, recheck);
        if got.is_some() {
            self.finish(bell, bit);
        }
        got
    }

    /// As [`Parking::park`], for a bit that futures of one process may share, except that a
    /// recheck that finds something leaves the bit armed: the caller then ends with
    /// [`Parking::finish_sharing`], which clears it only if no other future holds it.
    pub(crate) fn park_sharing<T>(
        &mut self,
        bell: Doorbell<'_>,
        bit: usize,
        nap: Duration,
        keep: impl FnOnce() -> Arc<dyn Send + Sync>,
        waker: &Waker,
        recheck: impl FnOnce() -> Option<T>,
    ) -> Option<T> {
        if !self.spin.is_zero() && !self.armed {
            let now = Instant::now();
            let until = *self
                .spin_until
                .get_or_insert_with(|| now.checked_add(self.spin).unwrap_or(now));
            if now < until {
                // Polled again after the executor's other ready tasks: a spin that does not
                // hold the thread.
                waker.wake_by_ref();
                return None;
            }
        }
        let armed = bell.arm(bit, nap);
        self.armed = true;
        if let Some(got) = recheck() {
            return Some(got);
        }
        let reg = self.reg.get_or_insert_with(|| {
            // SAFETY: the bell's word lies in the mapping `keep` owns (the caller's contract).
            unsafe { Registration::new(bell.word(), keep()) }
        });
        // Watch invariant 3: the value read by `arm`, before the recheck.
        reg.arm(armed.seen, armed.nap, waker);
        None
    }

    /// Whether the future is past its spin: armed and registered (its naps are real).
    pub(crate) fn is_armed(&self) -> bool {
        self.armed
    }

    /// The future is done or dropped: disarms the bit and unregisters (the slot is kept until
    /// `self` drops).
    pub(crate) fn finish(&mut self, bell: Doorbell<'_>, bit: usize) {
        let armed = self.armed;
        self.finish_sharing(bell, bit, armed);
    }

    /// As [`Parking::finish`], but clears the bell's bit if and only if `last`, whether or not
    /// this future armed it: futures of one process that share a bit (a client's calls) leave it
    /// set while another still counts on it, and the last of them clears it even if it never
    /// armed it itself (it may have ended within its spin, after others armed the bit).
    pub(crate) fn finish_sharing(&mut self, bell: Doorbell<'_>, bit: usize, last: bool) {
        self.armed = false;
        if last {
            bell.disarm(bit);
        }
        if let Some(reg) = &self.reg {
            reg.disarm();
        }
    }
}

/// A future's nap with no doorbell to watch (discovery polls): a registration on a private word
/// that nobody changes, so only its nap fires it. Dropping it unregisters.
#[derive(Debug, Default)]
pub(crate) struct Nap {
    reg: Option<Registration>,
}

impl Nap {
    /// Wakes `waker` once `nap` has passed (replacing an earlier nap of this `Nap`).
    pub(crate) fn sleep(&mut self, nap: Duration, waker: &Waker) {
        let reg = self.reg.get_or_insert_with(|| {
            let word = Arc::new(AtomicU32::new(0));
            // SAFETY: the word lives in the allocation the registration keeps.
            unsafe { Registration::new(&word, word.clone()) }
        });
        // The word stays 0: only the nap ends the wait.
        reg.arm(0, nap, waker);
    }
}

/// A new table and its waiter thread (`waitv`: try `futex_waitv`; false: the polling fallback).
fn start(waitv: bool) -> Arc<Shard> {
    let shard = Arc::new(WatchTable::new(Table {
        entries: (0..PER_THREAD).map(|_| Entry::vacant()).collect(),
        free: (0..PER_THREAD).rev().collect(),
    }));
    let runner = shard.clone();
    std::thread::Builder::new()
        .name("ringbus-waiter".into())
        .spawn(move || run(&runner, waitv))
        .expect("ringbus: cannot start the async waiter thread");
    shard
}

/// A waiter thread: sleeps on its table's words, fires what moved or timed out.
fn run(shard: &Shard, mut have_waitv: bool) {
    let mut waits: Vec<futex::Wait> = Vec::with_capacity(WAITV_MAX);
    let mut wakers: Vec<Waker> = Vec::with_capacity(PER_THREAD);
    loop {
        let (control, deadline) = shard.snapshot(|t| {
            waits.clear();
            let mut first: Option<Instant> = None;
            for e in t.entries.iter().filter(|e| e.armed) {
                waits.push(wait_on(e.word, e.seen));
                first = Some(first.map_or(e.deadline, |d| d.min(e.deadline)));
            }
            first
        });
        waits.push(wait_on(shard.control(), control));
        let timeout = deadline.map_or(IDLE, |d| d.saturating_duration_since(Instant::now()));
        if have_waitv {
            // The kernel compares each word with its expected value and sleeps until one is
            // woken or the timeout passes; a word unmapped meanwhile (its registration dropped
            // after the snapshot) only makes the call fail, and we loop.
            match futex::waitv(&waits, futex::WaitvFlags::empty(), Some(&until(timeout)), {
                futex::ClockId::Monotonic
            }) {
                Ok(_) => {}
                Err(e)
                    if [
                        rustix::io::Errno::AGAIN,
                        rustix::io::Errno::TIMEDOUT,
                        rustix::io::Errno::INTR,
                        rustix::io::Errno::FAULT,
                    ]
                    .contains(&e) => {}
                // ENOSYS (before Linux 5.16), EPERM (a filter): the polling fallback.
                Err(_) => have_waitv = false,
            }
        }
        if !have_waitv {
            let nap = if waits.len() > 1 {
                timeout.min(POLL_NAP)
            } else {
                timeout
            };
            super::futex::wait(shard.control(), control, nap);
        }
        let now = Instant::now();
        shard.edit(|t| {
            for e in t.entries.iter_mut().filter(|e| e.armed) {
                // SAFETY: an armed entry's word is kept mapped by its `keep` (watch invariant 5),
                // and we hold the table's lock.
                let word = unsafe { &*e.word };
                // Relaxed: the future rechecks its condition itself once woken.
                if word.load(Ordering::Relaxed) != e.seen || now >= e.deadline {
                    e.armed = false;
                    wakers.extend(e.waker.take());
                }
            }
        });
        // Outside the lock: a waker may run a task on this thread.
        for w in wakers.drain(..) {
            w.wake();
        }
    }
}

/// A `futex_waitv` entry: sleep while the shared (not process-private) u32 at `word` is `seen`.
fn wait_on(word: *const AtomicU32, seen: u32) -> futex::Wait {
    let mut w = futex::Wait::new();
    w.val = u64::from(seen);
    w.uaddr = futex::WaitPtr::new(word.cast_mut().cast());
    w.flags = futex::WaitFlags::SIZE_U32;
    w
}

/// The absolute CLOCK_MONOTONIC time `timeout` from now (`futex_waitv` takes a deadline).
fn until(timeout: Duration) -> rustix::time::Timespec {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let nanos = now.tv_nsec as u64 + u64::from(timeout.subsec_nanos());
    rustix::time::Timespec {
        tv_sec: now
            .tv_sec
            .saturating_add(timeout.as_secs().min(i64::MAX as u64 / 2) as i64)
            .saturating_add((nanos / 1_000_000_000) as i64),
        tv_nsec: (nanos % 1_000_000_000) as _,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loom::atomic::AtomicU64;
    use crate::sync::doorbell::ALL;
    use std::sync::atomic::AtomicBool;
    use std::task::Wake;

    struct Flag(AtomicBool, std::thread::Thread);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
            self.1.unpark();
        }
    }

    fn wait_flag(flag: &Flag, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while !flag.0.load(Ordering::SeqCst) {
            if Instant::now() >= end {
                return false;
            }
            std::thread::park_timeout(Duration::from_millis(10));
        }
        true
    }

    fn words() -> Arc<(AtomicU32, AtomicU64)> {
        Arc::new((AtomicU32::new(0), AtomicU64::new(0)))
    }

    #[test]
    fn waiter_wakes_a_registration_when_its_word_moves() {
        let w = words();
        let flag = Arc::new(Flag(AtomicBool::new(false), std::thread::current()));
        let waker = Waker::from(flag.clone());
        let bell = Doorbell::new(&w.0, &w.1);
        let mut parking = Parking::default();
        let keep: Arc<dyn Send + Sync> = w.clone();
        // An hour-long nap: only the ring can fire it.
        let got = parking.park(bell, 2, IDLE, || keep, &waker, || None::<()>);
        assert!(got.is_none());
        assert!(bell.ring(1), "the armed bit makes the ringer call");
        assert!(wait_flag(&flag, Duration::from_secs(10)), "woken");
        parking.finish(bell, 2);
        assert!(!bell.has_sleepers());
    }

    /// Two futures sharing bit 3: the one whose recheck finds its item leaves the bit armed,
    /// so the other (still registered) is rung; the last to finish clears it. With `park`'s
    /// disarming recheck here, the ring below finds no sleeper.
    #[test]
    fn a_recheck_that_finds_its_item_leaves_a_shared_bit_for_the_other_future() {
        let w = words();
        let bell = Doorbell::new(&w.0, &w.1);
        let flag = Arc::new(Flag(AtomicBool::new(false), std::thread::current()));
        let waker = Waker::from(flag.clone());
        let keep = || w.clone() as Arc<dyn Send + Sync>;
        let (mut waiting, mut lucky) = (Parking::default(), Parking::default());
        assert!(waiting
            .park_sharing(bell, 3, IDLE, keep, &waker, || None::<()>)
            .is_none());
        let got = lucky.park_sharing(bell, 3, IDLE, keep, &waker, || Some(7));
        assert_eq!(got, Some(7));
        lucky.finish_sharing(bell, 3, false);
        assert!(bell.ring(1), "the other future's bit is still armed");
        assert!(wait_flag(&flag, Duration::from_secs(10)), "and it is woken");
        waiting.finish_sharing(bell, 3, true);
        assert!(!bell.has_sleepers(), "the last one cleared it");
    }

    #[test]
    fn waiter_fires_a_registration_whose_nap_passed() {
        let w = words();
        let flag = Arc::new(Flag(AtomicBool::new(false), std::thread::current()));
        // SAFETY: the word lives in `w`, kept by the registration.
        let reg = unsafe { Registration::new(&w.0, w.clone()) };
        reg.arm(0, Duration::from_millis(5), &Waker::from(flag.clone()));
        assert!(wait_flag(&flag, Duration::from_secs(10)), "fired by its nap");
    }

    #[test]
    fn waiter_serves_more_registrations_than_one_futex_waitv_takes() {
        let n = PER_THREAD * 2 + 3;
        let all: Vec<_> = (0..n)
            .map(|_| {
                let w = words();
                let flag = Arc::new(Flag(AtomicBool::new(false), std::thread::current()));
                // SAFETY: the word lives in `w`, kept by the registration.
                let reg = unsafe { Registration::new(&w.0, w.clone()) };
                reg.arm(0, IDLE, &Waker::from(flag.clone()));
                (w, flag, reg)
            })
            .collect();
        assert!(live_registrations() >= n);
        for (w, _, _) in &all {
            Doorbell::new(&w.0, &w.1).wake(1);
        }
        for (_, flag, _) in &all {
            assert!(wait_flag(flag, Duration::from_secs(10)), "every one woken");
        }
    }

    #[test]
    fn the_polling_fallback_wakes_a_registration_too() {
        let shard = start(false);
        let w = words();
        let flag = Arc::new(Flag(AtomicBool::new(false), std::thread::current()));
        let mut keep = Some(w.clone() as Arc<dyn Send + Sync>);
        // SAFETY: the word lives in `w`, kept by the registration.
        let reg = unsafe { Registration::place(&shard, &w.0, &mut keep) }.unwrap();
        reg.arm(0, IDLE, &Waker::from(flag.clone()));
        Doorbell::new(&w.0, &w.1).wake(1);
        assert!(wait_flag(&flag, Duration::from_secs(10)), "woken by a poll");
    }

    /// Register/notify races without naps to hide a loss: waiters (threads standing in for
    /// futures) park with an hour-long nap on more doorbells than one waiter thread takes;
    /// ringers publish each doorbell's next news once its waiter took the last one, and ring.
    /// Every news is the last until taken, so a lost wake-up leaves a waiter asleep for good
    /// (its flag never set) and fails the test after 20 s.
    #[test]
    fn register_notify_races_never_lose_a_wake_up() {
        const PAIRS: usize = PER_THREAD + 9;
        const NEWS: u32 = 300;
        // The doorbell's two words, the news, what the waiter took.
        type Words = (AtomicU32, AtomicU64, AtomicU32, AtomicU32);
        let all: Vec<Arc<Words>> = (0..PAIRS)
            .map(|_| {
                Arc::new((
                    AtomicU32::new(0),
                    AtomicU64::new(0),
                    AtomicU32::new(0),
                    AtomicU32::new(0),
                ))
            })
            .collect();
        let waiters: Vec<_> = all
            .iter()
            .cloned()
            .map(|w| {
                std::thread::spawn(move || {
                    let flag = Arc::new(Flag(AtomicBool::new(false), std::thread::current()));
                    let waker = Waker::from(flag.clone());
                    let bell = Doorbell::new(&w.0, &w.1);
                    let mut parking = Parking::default();
                    let mut seen = 0;
                    let news = || w.2.load(Ordering::SeqCst);
                    while seen < NEWS {
                        w.3.store(seen, Ordering::SeqCst);
                        if news() > seen {
                            seen = news();
                            continue;
                        }
                        flag.0.store(false, Ordering::SeqCst);
                        let keep = || w.clone() as Arc<dyn Send + Sync>;
                        match parking.park(bell, 0, IDLE, keep, &waker, || {
                            let n = news();
                            (n > seen).then_some(n)
                        }) {
                            Some(n) => seen = n,
                            None => assert!(
                                wait_flag(&flag, Duration::from_secs(20)),
                                "lost wake-up after news {seen}"
                            ),
                        }
                    }
                    parking.finish(bell, 0);
                })
            })
            .collect();
        let ringers: Vec<_> = all
            .chunks(PAIRS / 4 + 1)
            .map(|chunk| {
                let chunk = chunk.to_vec();
                std::thread::spawn(move || {
                    for k in 1..=NEWS {
                        for w in &chunk {
                            let end = Instant::now() + Duration::from_secs(30);
                            while w.3.load(Ordering::SeqCst) < k - 1 {
                                assert!(Instant::now() < end, "a waiter is stuck");
                                std::thread::yield_now();
                            }
                            // Relaxed: ordered before the sleeper check by the fence in `ring`.
                            w.2.store(k, Ordering::Relaxed);
                            Doorbell::new(&w.0, &w.1).ring(ALL);
                        }
                    }
                })
            })
            .collect();
        for t in ringers.into_iter().chain(waiters) {
            t.join().unwrap();
        }
    }

    #[test]
    fn a_dropped_registration_is_not_woken() {
        let w = words();
        let flag = Arc::new(Flag(AtomicBool::new(false), std::thread::current()));
        // SAFETY: the word lives in `w`, kept by the registration.
        let reg = unsafe { Registration::new(&w.0, w.clone()) };
        reg.arm(0, IDLE, &Waker::from(flag.clone()));
        drop(reg);
        // Only a reference held by this test remains: the table let go of its waker and mapping.
        assert_eq!(Arc::strong_count(&flag), 1);
        assert_eq!(Arc::strong_count(&w), 1);
    }
}
