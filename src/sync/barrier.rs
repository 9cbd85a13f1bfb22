//! Asymmetric memory barriers for the sleep handshakes: the hot side (a sender that publishes,
//! then looks whether its peer sleeps) pays only a compiler barrier, the cold side (a waiter about
//! to sleep) pays a `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` system call.
//!
//! The handshake is Dekker's: the sender stores its message then loads the peer's sleep flag; the
//! waiter stores its sleep flag then loads the message. One of them must see the other's store.
//! With symmetric fences each side runs `fence(SeqCst)` between its store and its load. With
//! asymmetric ones the sender keeps program order only against the compiler, and the waiter's
//! `membarrier` makes every running thread of every registered process pass a full barrier
//! before it returns: if the sender's load ran after that barrier, it sees the flag (stored
//! before the call); if before, its store (earlier in program order) was visible before the call
//! returned, and the waiter's load sees it. A sender that is not running is between context
//! switches, which are full barriers.
//!
//! A process registers at its first use. If the kernel refuses (old kernel, seccomp), this
//! process falls back to symmetric fences on its sending side, and as a waiter sleeps in short
//! naps ([`FALLBACK_NAP`]): a registered sender that skipped its fence can then be missed for at
//! most one nap, never for good.

use std::sync::atomic::{compiler_fence, fence, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use rustix::thread::{membarrier, MembarrierCommand};

/// Longest sleep of a waiter whose process cannot use `membarrier`.
pub const FALLBACK_NAP: Duration = Duration::from_millis(1);

/// Whether this process is registered for global expedited membarriers (decided once).
pub fn asymmetric() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok()
            && membarrier(MembarrierCommand::GlobalExpedited).is_ok()
    })
}

/// The sender's barrier, between publishing and loading the peer's sleep flag.
#[inline]
pub fn light() {
    light_as(asymmetric());
}

/// [`light`] for a caller that read [`asymmetric`] once before (its answer never changes).
#[inline(always)]
pub fn light_as(asymmetric: bool) {
    if asymmetric {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The waiter's barrier, between announcing that it sleeps and its last look for a message.
/// Returns the longest sleep that is safe afterwards: `max` when the barrier covered every
/// sender, [`FALLBACK_NAP`] (or less) when it could not.
#[cold]
pub fn heavy(max: Duration) -> Duration {
    fence(Ordering::SeqCst);
    if asymmetric() && membarrier(MembarrierCommand::GlobalExpedited).is_ok() {
        max
    } else {
        max.min(FALLBACK_NAP)
    }
}
