//! The doorbell: the one sleep/notify handshake of every pattern.
//!
//! A doorbell is two words of a shared segment:
//! - `seq` (u32): the futex word. A ringer bumps it before waking, so a sleeper that read the old
//!   value cannot sleep through the wake (the kernel compares the word before sleeping).
//! - `sleepers` (u64): one bit a member (subscriber, server, consumer, ...) that sleeps or is
//!   about to. Only the member itself sets and clears its bit; the membership layer clears it for
//!   a member that died ([`Doorbell::forget`]).
//!
//! # The handshake
//! It is Dekker's: a ringer stores its news (a commit, a freed slot), then loads `sleepers`; a
//! sleeper stores its bit, then loads the news ([`Doorbell::sleep_unless`]'s `recheck`). One of
//! them must see the other's store, so the news is never missed for good:
//! - ringer: *publish*; [`barrier::light`]; load `sleepers`; if non-zero, bump `seq` and wake;
//! - sleeper: load `seq`; set its bit; [`barrier::heavy`]; recheck; sleep while `seq` is unchanged;
//!   clear its bit.
//!
//! The barriers are asymmetric ([`super::barrier`]): the ringer, on the hot path, pays a compiler
//! barrier only, and no system call while nobody sleeps; the sleeper, already on its way into the
//! kernel, pays a `membarrier`. Where the kernel refuses `membarrier`, the ringer's barrier is a
//! full fence and the sleeper naps at most [`barrier::FALLBACK_NAP`], so a ringer of another
//! process that skipped its fence delays a wake by one nap at most.
//!
//! Loom cannot model `membarrier` (it has no notion of a barrier run on another thread's behalf).
//! The asymmetric step is argued in [`super::barrier`]; with symmetric fences (the fallback, and
//! the model in this file's tests) the handshake is the classic store-fence-load pair, which the
//! loom model below checks: without the sleeper's fence it finds the lost wake-up.
//!
//! # Waiting without a thread
//! The async layer does not block a thread: it calls [`Doorbell::arm`], rechecks, and watches
//! [`Doorbell::word`] for a change from the armed value (with `futex_waitv` or a helper thread),
//! then [`Doorbell::disarm`]s. `sleep_unless` is that sequence with a blocking futex wait.

use std::time::Duration;

#[cfg(not(loom))]
use super::{barrier, futex};
use crate::loom::atomic::{AtomicU32, AtomicU64, Ordering};

/// Wake every sleeper ([`Doorbell::ring`]).
pub(crate) const ALL: u32 = i32::MAX as u32;

/// A doorbell over two shared words (see the module doc).
#[derive(Clone, Copy)]
pub(crate) struct Doorbell<'a> {
    seq: &'a AtomicU32,
    sleepers: &'a AtomicU64,
}

/// The two doorbells of a segment kind whose receivers wait for news and whose senders wait for
/// room (topics, queues): where each one's futex word and sleeper bitmap sit.
#[cfg(not(loom))]
pub(crate) trait Bells {
    /// Offsets of the news doorbell's futex word and sleeper bitmap (receivers sleep on it).
    const NEWS: (usize, usize);
    /// Offsets of the room doorbell's futex word and sleeper bitmap (blocked senders sleep on it).
    const ROOM: (usize, usize);

    /// The doorbell receivers sleep on, waiting for a message.
    #[inline]
    fn news_bell<'a>(&self, r: &'a crate::shm::Region) -> Doorbell<'a> {
        Doorbell::at(r, Self::NEWS.0, Self::NEWS.1)
    }

    /// The doorbell senders sleep on, waiting for room.
    #[inline]
    fn room_bell<'a>(&self, r: &'a crate::shm::Region) -> Doorbell<'a> {
        Doorbell::at(r, Self::ROOM.0, Self::ROOM.1)
    }
}

/// What [`Doorbell::arm`] returns: the value of the futex word to wait on, and the longest
/// wait that is safe (shorter than asked where the barrier could not cover every ringer).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Armed {
    /// Wait while the futex word still holds this.
    pub(crate) seen: u32,
    /// Wait at most this long before rechecking.
    pub(crate) nap: Duration,
}

impl<'a> Doorbell<'a> {
    /// The doorbell whose futex word is `seq` and sleeper bitmap `sleepers`.
    pub(crate) fn new(seq: &'a AtomicU32, sleepers: &'a AtomicU64) -> Doorbell<'a> {
        Doorbell { seq, sleepers }
    }

    /// The doorbell at offsets `seq` and `sleepers` of a segment.
    #[cfg(not(loom))]
    pub(crate) fn at(r: &'a crate::shm::Region, seq: usize, sleepers: usize) -> Doorbell<'a> {
        Doorbell::new(r.u32_at(seq), r.u64_at(sleepers))
    }

    /// The ringer's half, after publishing: wakes up to `n` sleepers ([`ALL`] for every one) if
    /// any member announced that it sleeps. Costs a compiler barrier and one load while nobody
    /// sleeps. Returns whether it made a wake-up call.
    #[inline]
    pub(crate) fn ring(&self, n: u32) -> bool {
        #[cfg(not(loom))]
        barrier::light();
        #[cfg(loom)]
        crate::loom::atomic::fence(Ordering::SeqCst);
        // Relaxed: ordered after the caller's publication by the barrier (module doc).
        if self.sleepers.load(Ordering::Relaxed) != 0 {
            self.wake(n);
            true
        } else {
            false
        }
    }

    /// Wakes up to `n` sleepers whether or not any announced itself (a member left, a slot was
    /// handed back outside the hot path).
    #[cold]
    pub(crate) fn wake(&self, n: u32) {
        // SeqCst: a sleeper that read the old value before sleeping gets EAGAIN or the wake.
        self.seq.fetch_add(1, Ordering::SeqCst);
        #[cfg(not(loom))]
        futex::wake(self.seq, n);
        #[cfg(loom)]
        let _ = n;
    }

    /// The sleeper's half, first step: announces member `bit` as sleeping and runs the heavy
    /// barrier. The caller must recheck its condition after this, and wait (at most
    /// [`Armed::nap`]) only while [`Doorbell::word`] still holds [`Armed::seen`].
    pub(crate) fn arm(&self, bit: usize, nap: Duration) -> Armed {
        debug_assert!(bit < 64);
        // Acquire: a later value means a wake we must not sleep through.
        let seen = self.seq.load(Ordering::Acquire);
        // Relaxed: ordered before the caller's recheck by the heavy barrier below.
        self.sleepers.fetch_or(1 << bit, Ordering::Relaxed);
        #[cfg(not(loom))]
        let nap = barrier::heavy(nap);
        #[cfg(loom)]
        crate::loom::atomic::fence(Ordering::SeqCst);
        Armed { seen, nap }
    }

    /// The sleeper's half, last step: member `bit` no longer sleeps.
    pub(crate) fn disarm(&self, bit: usize) {
        // Relaxed: only a hint for ringers; a stale bit costs one spare wake.
        self.sleepers.fetch_and(!(1 << bit), Ordering::Relaxed);
    }

    /// Clears the bit of member `bit`, which left or died (the membership layer calls it).
    pub(crate) fn forget(&self, bit: usize) {
        // Relaxed: as in `disarm`.
        self.sleepers.fetch_and(!(1 << bit), Ordering::Relaxed);
    }

    /// Clears every member's bit (a doorbell whose only member left, with the bits of its
    /// futures).
    pub(crate) fn forget_all(&self) {
        // Relaxed: as in `disarm`.
        self.sleepers.store(0, Ordering::Relaxed);
    }

    /// The futex word, for a waiter that is not a blocked thread (module doc).
    #[allow(dead_code)]
    pub(crate) fn word(&self) -> &'a AtomicU32 {
        self.seq
    }

    /// Whether some member announced that it sleeps (a hint).
    pub(crate) fn has_sleepers(&self) -> bool {
        // Relaxed: a hint, ordered by nothing.
        self.sleepers.load(Ordering::Relaxed) != 0
    }

    /// Sleeps member `bit` for at most `nap` unless `recheck` finds something: arms, rechecks,
    /// waits while the word is unchanged, disarms. Returns what `recheck` found; `None` after a
    /// wake, a timeout or a signal (callers loop and recheck).
    #[cfg(not(loom))]
    pub(crate) fn sleep_unless<T>(
        &self,
        bit: usize,
        nap: Duration,
        recheck: impl FnOnce() -> Option<T>,
    ) -> Option<T> {
        let armed = self.arm(bit, nap);
        let got = recheck();
        if got.is_none() {
            futex::wait(self.seq, armed.seen, armed.nap);
        }
        self.disarm(bit);
        got
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn ringing_without_sleepers_makes_no_call() {
        let (seq, sleepers) = (AtomicU32::new(0), AtomicU64::new(0));
        let bell = Doorbell::new(&seq, &sleepers);
        assert!(!bell.ring(ALL));
        assert_eq!(seq.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_sleeper_is_woken_by_the_news_it_waits_for() {
        let words = Arc::new((AtomicU32::new(0), AtomicU64::new(0), AtomicBool::new(false)));
        let w = words.clone();
        let sleeper = std::thread::spawn(move || {
            let bell = Doorbell::new(&w.0, &w.1);
            // An hour-long nap: only the ring (or the recheck) can end it.
            while bell
                .sleep_unless(3, Duration::from_secs(3600), || {
                    w.2.load(Ordering::SeqCst).then_some(())
                })
                .is_none()
            {}
        });
        let bell = Doorbell::new(&words.0, &words.1);
        words.2.store(true, Ordering::SeqCst);
        // The sleeper either saw the news in its recheck or announced itself before we load.
        bell.ring(ALL);
        sleeper.join().unwrap();
        assert_eq!(
            words.1.load(Ordering::SeqCst),
            0,
            "the sleeper retracted its bit"
        );
    }

    #[test]
    fn forget_clears_a_dead_members_bit() {
        let (seq, sleepers) = (AtomicU32::new(0), AtomicU64::new(0));
        let bell = Doorbell::new(&seq, &sleepers);
        let armed = bell.arm(5, Duration::from_millis(1));
        assert!(armed.nap <= Duration::from_millis(1));
        assert!(bell.has_sleepers());
        bell.forget(5);
        assert!(!bell.has_sleepers());
    }
}

#[cfg(loom)]
mod loom_tests {
    use super::*;
    use ::loom::sync::Arc;

    /// A ringer publishes news and rings; a sleeper arms, rechecks and "sleeps" (checks that the
    /// word moved past what it armed with). In every interleaving the sleeper either sees the news
    /// in its recheck or is woken: the word it sleeps on has moved.
    ///
    /// Shown to fail: with the sleeper's fence in `arm` removed (the Relaxed `fetch_or` then
    /// reordered after the recheck), loom finds the interleaving where the ringer loads
    /// `sleepers == 0` and the sleeper misses the news: "lost wake-up".
    #[test]
    fn a_sleeper_never_misses_the_news_it_rechecks() {
        crate::loom::model::builder(3).check(|| {
            let words = Arc::new((AtomicU32::new(0), AtomicU64::new(0), AtomicU32::new(0)));
            let w = words.clone();
            let ringer = ::loom::thread::spawn(move || {
                let bell = Doorbell::new(&w.0, &w.1);
                // Relaxed: ordered before the sleeper check by the ringer's fence in `ring`.
                w.2.store(1, Ordering::Relaxed);
                bell.ring(ALL);
            });
            let bell = Doorbell::new(&words.0, &words.1);
            let armed = bell.arm(0, Duration::from_millis(1));
            // Relaxed: ordered after the announcement by the fence in `arm`.
            let news = words.2.load(Ordering::Relaxed) == 1;
            ringer.join().unwrap();
            let woken = words.0.load(Ordering::SeqCst) != armed.seen;
            bell.disarm(0);
            assert!(news || woken, "lost wake-up");
        });
    }
}
