//! A short lock in shared memory whose holder is a process: the word holds 0 when free, else the
//! holder's packed [`ProcessId`]. A holder that dies is detected (pid and start time) and its lock
//! taken over, so a SIGKILL never wedges the processes that share the word.
//!
//! Meant for critical sections of a few stores (reserve a position, claim a batch): waiters spin,
//! then yield, and look at the holder's liveness only every [`CHECK_INTERVAL`].
//!
//! Two threads of one process share an identity: the lock still excludes them (the word is taken
//! by compare-and-swap from 0), but a holder's liveness is only ever judged from another process.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::ProcessId;

pub use super::CHECK_INTERVAL;

const SPINS: u32 = 128;
/// A waiter's pause between polls once the lock has been held for a [`CHECK_INTERVAL`].
const NAP: Duration = Duration::from_micros(500);

/// Takes the lock if it is free now.
#[inline]
pub fn try_lock(word: &AtomicU64, me: u64) -> bool {
    // Acquire: what the previous holder wrote before its Release unlock is visible to us.
    // Relaxed on failure: nothing is read under a lock we did not get.
    word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
}

/// Releases the lock.
#[inline]
pub fn unlock(word: &AtomicU64) {
    // Release: our writes under the lock are visible to the next holder (its Acquire CAS).
    word.store(0, Ordering::Release);
}

/// How long a short lock may stay held by a live holder before a waiter gives up with a typed
/// error: a holder keeps it for a few stores, so only a stopped process (SIGSTOP, a debugger) or
/// a corrupt word naming a live process (ours included) holds it this long.
pub const HOLD_LIMIT: Duration = Duration::from_secs(1);

/// Takes the lock, waiting at most `wait` (`None`: for ever, which is only safe where the word
/// cannot be corrupt: a dead holder is detected, a live one is waited for). Returns false on
/// timeout. The clock is read only once the lock was found taken.
pub fn lock(word: &AtomicU64, me: u64, wait: Option<Duration>) -> bool {
    if try_lock(word, me) {
        return true;
    }
    lock_slow(word, me, wait)
}

#[cold]
fn lock_slow(word: &AtomicU64, me: u64, wait: Option<Duration>) -> bool {
    let mut spins = 0u32;
    let start = Instant::now();
    let deadline = wait.and_then(|w| start.checked_add(w));
    let mut next_check = start + CHECK_INTERVAL;
    loop {
        // Relaxed: a hint; the CAS in `try_lock` decides.
        let holder = word.load(Ordering::Relaxed);
        if holder == 0 {
            if try_lock(word, me) {
                return true;
            }
            continue;
        }
        if spins < SPINS {
            spins += 1;
            std::hint::spin_loop();
            continue;
        }
        let now = Instant::now();
        if now < start + CHECK_INTERVAL {
            std::thread::yield_now();
        } else {
            // Held for longer than any critical section runs: the holder is descheduled,
            // stopped or dead (or the word is corrupt). Poll without burning a CPU.
            std::thread::sleep(NAP);
        }
        if now >= next_check {
            next_check = now + CHECK_INTERVAL;
            if holder != me && !ProcessId::unpack(holder).is_alive() {
                // The holder died holding the lock: take it over. Only one taker wins the CAS.
                // Acquire: as in try_lock (the dead holder's writes are whatever it left; the
                // caller's protocol copes with a half-done critical section).
                if word
                    .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    log_take_over(holder);
                    return true;
                }
            }
        }
        if deadline.is_some_and(|d| now >= d) {
            return false;
        }
    }
}

/// Logs that a lock held by the dead process `holder` (a packed [`ProcessId`]) was taken over.
#[cold]
fn log_take_over(holder: u64) {
    crate::log_rare!(
        warn,
        pid = ProcessId::unpack(holder).pid,
        "took over a lock whose holder died holding it"
    );
    let _ = holder;
}

/// A handle's memory of a short lock it gave up on: the holder word it found stuck. The next
/// time the word still holds that value, the handle waits only a [`CHECK_INTERVAL`] (a real
/// holder of a short lock lets go in microseconds), so a corrupt word or a stopped holder costs
/// [`HOLD_LIMIT`] once, not on every call. Touched only when the lock is found taken.
#[derive(Debug, Default)]
pub struct Waiter {
    /// An atomic only so that handles stay `Sync`; Relaxed everywhere: a per-handle hint.
    stuck: AtomicU64,
}

impl Waiter {
    /// Takes the lock (see [`lock`]); false if it stayed held by a live holder.
    #[inline]
    pub fn lock(&self, word: &AtomicU64, me: u64) -> bool {
        try_lock(word, me) || self.lock_slow(word, me)
    }

    #[cold]
    fn lock_slow(&self, word: &AtomicU64, me: u64) -> bool {
        // Relaxed: a hint choosing how long to wait; `lock` decides.
        let held = word.load(Ordering::Relaxed);
        let wait = if held != 0 && held == self.stuck.load(Ordering::Relaxed) {
            CHECK_INTERVAL
        } else {
            HOLD_LIMIT
        };
        let got = lock(word, me, Some(wait));
        // Relaxed: as above.
        let now_held = if got { 0 } else { word.load(Ordering::Relaxed) };
        self.stuck.store(now_held, Ordering::Relaxed);
        got
    }
}

/// Takes the lock for a long critical section (a disk sync): waiters sleep on the futex word
/// `bell` instead of spinning, and look at the holder's liveness every [`CHECK_INTERVAL`]. The
/// holder releases it with [`unlock_waking`]. Returns false if the lock stayed held by a live
/// holder for `wait`.
pub fn lock_sleeping(word: &AtomicU64, bell: &AtomicU32, me: u64, wait: Duration) -> bool {
    let deadline = Instant::now().checked_add(wait);
    loop {
        if try_lock(word, me) {
            return true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        // Acquire: pairs with the Release bump in `unlock_waking`. If we see a bell rung after
        // an unlock, we also see that unlock's store of 0 (or a later taker's word), so we never
        // sleep on a bell that was rung for a lock we still see as held.
        let seen = bell.load(Ordering::Acquire);
        // Relaxed: ordered after the Acquire load above; the CAS decides.
        let holder = word.load(Ordering::Relaxed);
        if holder == 0 {
            continue;
        }
        if holder != me && !ProcessId::unpack(holder).is_alive() {
            // The holder died holding the lock: take it over (one taker wins the CAS).
            // Acquire: as in `try_lock`.
            if word
                .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                log_take_over(holder);
                return true;
            }
            continue;
        }
        // The holder bumps the bell after its unlock: an unlock after our load above makes
        // the wait return at once (or wakes it).
        super::futex::wait(bell, seen, CHECK_INTERVAL);
    }
}

/// Releases a lock taken with [`lock_sleeping`] and wakes its sleepers.
pub fn unlock_waking(word: &AtomicU64, bell: &AtomicU32) {
    unlock(word);
    // Release: a waiter that sees the new bell sees the unlock (see `lock_sleeping`).
    bell.fetch_add(1, Ordering::Release);
    super::futex::wake_all(bell);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_and_releases() {
        let w = AtomicU64::new(0);
        let me = ProcessId::current().pack();
        assert!(try_lock(&w, me));
        assert!(!try_lock(&w, me));
        assert!(!lock(&w, me, Some(Duration::ZERO)));
        unlock(&w);
        assert!(lock(&w, me, None));
    }

    #[test]
    fn a_sleeping_waiter_gets_the_lock_when_it_is_released() {
        use std::sync::Arc;
        let w = Arc::new((AtomicU64::new(0), AtomicU32::new(0)));
        let me = ProcessId::current().pack();
        assert!(lock_sleeping(&w.0, &w.1, me, HOLD_LIMIT));
        let w2 = w.clone();
        let waiter = std::thread::spawn(move || {
            // Another thread of this process shares our identity; the CAS from 0 still excludes.
            assert!(lock_sleeping(&w2.0, &w2.1, me, HOLD_LIMIT));
            unlock_waking(&w2.0, &w2.1);
        });
        unlock_waking(&w.0, &w.1);
        waiter.join().unwrap();
        assert_eq!(w.0.load(Ordering::Relaxed), 0);
        // A dead holder is taken over by a sleeping taker too.
        w.0.store(ProcessId { pid: 0, start: 7 }.pack() | 1, Ordering::Relaxed);
        assert!(lock_sleeping(&w.0, &w.1, me, HOLD_LIMIT));
        assert_eq!(w.0.load(Ordering::Relaxed), me);
        // A word naming a live holder (here: ourselves, as a corrupt word may) is given up on.
        assert!(!lock_sleeping(&w.0, &w.1, me, Duration::ZERO));
        assert!(!lock(&w.0, me, Some(Duration::from_millis(20))));
    }

    #[test]
    fn a_waiter_gives_up_on_a_stuck_word_at_once_the_second_time() {
        // A word naming a live holder that never lets go (ourselves, as a corrupt word may).
        let me = ProcessId::current().pack();
        let w = AtomicU64::new(me);
        let waiter = Waiter::default();
        assert!(!waiter.lock(&w, me));
        assert_eq!(
            waiter.stuck.load(Ordering::Relaxed),
            me,
            "the stuck word is remembered"
        );
        // Given up on again (after a check interval, not the hold limit); a released word is
        // taken at once.
        assert!(!waiter.lock(&w, me));
        w.store(0, Ordering::Relaxed);
        assert!(waiter.lock(&w, me));
    }

    #[test]
    fn a_dead_holder_is_taken_over() {
        // pid 0 is never a live process.
        let w = AtomicU64::new(ProcessId { pid: 0, start: 7 }.pack() | 1);
        let me = ProcessId::current().pack();
        assert!(lock(&w, me, None));
        assert_eq!(w.load(Ordering::Relaxed), me);
    }
}
