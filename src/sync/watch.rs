//! The watch table: the handshake between futures that register futex words and the waiter
//! thread that sleeps on all of them at once ([`super::waiter`]).
//!
//! A table holds the registrations of one waiter thread under a lock, and a private `control`
//! word the thread sleeps on beside the registered words. Registration is the second half of
//! the doorbell's handshake ([`super::doorbell`]): a future arms the doorbell (reads the word's
//! value `seen` and announces its bit), rechecks for news, and only then registers
//! `(word, seen)`; the thread wakes it once the word differs from `seen`.
//!
//! # Invariants
//! 1. The table changes only under its lock. A registrant ([`WatchTable::change`]) bumps
//!    `control` after its change, and futex-wakes it.
//! 2. The thread reads `control` under the lock *before* it reads the table
//!    ([`WatchTable::snapshot`]), then sleeps while `control` still holds that value and every
//!    snapshot word still holds its `seen`. A change missing from its snapshot took the lock
//!    after the thread released it, so its bump comes after the thread's read: the kernel finds
//!    `control` moved (the wait returns at once) or the bump's wake ends the wait. The thread
//!    never sleeps on a stale table.
//! 3. A registration's `seen` is the value [`super::doorbell::Doorbell::arm`] read *before* the
//!    future's recheck, never re-read at registration: a ringer that published after the recheck
//!    missed it moves the word past `seen`, which invariant 2 turns into a wake.
//! 4. The thread fires a registration (takes its waker) only under the lock, and a future's guard
//!    removes its registration under the lock: after the guard's removal the thread never reads
//!    the entry's word again, and the waker is woken at most once per registration (a waker
//!    taken just before the removal may still be woken: a spurious wake, which futures allow).
//! 5. The mapping of a registered word outlives its entry: the entry owns a reference to the
//!    region, dropped only when the entry is cleared under the lock (invariant 4).
//!
//! # Memory ordering
//! The lock orders the table's changes; `control` is SeqCst (off the hot path: one registration
//! per wait). The kernel compares each futex word with its expected value under its own lock,
//! and a waker (ringer, registrant) changes the word before it calls wake, so a change after the
//! compare is followed by a wake: the classic futex argument, applied to each word of the set.
//!
//! The loom model below checks invariants 2 and 3 together with the doorbell's handshake.

use crate::loom::atomic::{AtomicU32, Ordering};
use crate::loom::Mutex;

/// A waiter thread's table of registrations `T` and its control word (module doc).
pub(crate) struct WatchTable<T> {
    control: AtomicU32,
    table: Mutex<T>,
}

impl<T> WatchTable<T> {
    /// A table holding `table`.
    pub(crate) fn new(table: T) -> WatchTable<T> {
        WatchTable {
            control: AtomicU32::new(0),
            table: Mutex::new(table),
        }
    }

    /// A registrant's change: runs `f` on the table under the lock, then bumps the control word
    /// and wakes the thread if `f` returned `true` (invariant 1).
    pub(crate) fn change(&self, f: impl FnOnce(&mut T) -> bool) {
        let changed = {
            let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut t)
        };
        if changed {
            // SeqCst: off the hot path; the bump follows the change (invariant 2).
            self.control.fetch_add(1, Ordering::SeqCst);
            #[cfg(not(loom))]
            super::futex::wake(&self.control, 1);
        }
    }

    /// The thread's snapshot: under the lock, reads the control word first, then runs `f` on the
    /// table (invariant 2). Sleep while the control word holds the value returned.
    pub(crate) fn snapshot<R>(&self, f: impl FnOnce(&mut T) -> R) -> (u32, R) {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        // SeqCst: off the hot path; read under the lock before the table (invariant 2).
        let control = self.control.load(Ordering::SeqCst);
        (control, f(&mut t))
    }

    /// The thread's own edit (firing registrations): it is awake, so no bump is needed.
    pub(crate) fn edit<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut t)
    }

    /// The control word the thread sleeps on beside the registered words.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn control(&self) -> &AtomicU32 {
        &self.control
    }
}

#[cfg(loom)]
mod loom_tests {
    use super::*;
    use crate::loom::atomic::AtomicU64;
    use crate::sync::doorbell::{Doorbell, ALL};
    use ::loom::sync::Arc;
    use std::time::Duration;

    /// A ringer publishes news and rings the doorbell; a future arms the doorbell, rechecks and,
    /// finding nothing, registers `(word, seen)` in the table; the waiter thread snapshots the
    /// table. In every interleaving the future saw the news in its recheck, or the thread's
    /// wait on (control, snapshot) cannot last: the control word moved past what the thread
    /// read, or the registration is in the snapshot and its word moved past `seen`.
    ///
    /// Shown to fail: with [`WatchTable::snapshot`] reading the control word after releasing the
    /// lock (invariant 2's key step), loom finds the interleaving where the snapshot misses the
    /// registration and the control value read already includes its bump: "waiter sleeps
    /// through the registration". It fails the same way with the future registering the word's
    /// value re-read at registration instead of `armed.seen` (invariant 3): the ring lands
    /// between the recheck and the re-read.
    #[test]
    fn a_registered_future_is_never_slept_through() {
        crate::loom::model::builder(3).check(|| {
            let bell_words = Arc::new((AtomicU32::new(0), AtomicU64::new(0), AtomicU32::new(0)));
            let table: Arc<WatchTable<Option<u32>>> = Arc::new(WatchTable::new(None));

            let (w, t) = (bell_words.clone(), table.clone());
            let future = ::loom::thread::spawn(move || {
                let bell = Doorbell::new(&w.0, &w.1);
                let armed = bell.arm(0, Duration::from_millis(1));
                // Relaxed: ordered after the announcement by the fence in `arm`.
                if w.2.load(Ordering::Relaxed) == 1 {
                    bell.disarm(0);
                    return true;
                }
                t.change(|slot| {
                    *slot = Some(armed.seen);
                    true
                });
                false
            });
            let w = bell_words.clone();
            let ringer = ::loom::thread::spawn(move || {
                // Relaxed: ordered before the sleeper check by the ringer's fence in `ring`.
                w.2.store(1, Ordering::Relaxed);
                Doorbell::new(&w.0, &w.1).ring(ALL);
            });
            let (control, snap) = table.snapshot(|slot| *slot);
            let saw_news = future.join().unwrap();
            ringer.join().unwrap();
            // What the thread's futex_waitv compares (a later change is followed by a wake).
            let control_moved = table.control().load(Ordering::SeqCst) != control;
            let word_moved = snap.is_some_and(|seen| bell_words.0.load(Ordering::SeqCst) != seen);
            assert!(
                saw_news || control_moved || word_moved,
                "waiter sleeps through the registration"
            );
        });
    }
}
