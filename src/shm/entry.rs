//! Participant entries: the `state` and `owner` words every table of a segment starts its entries
//! with (publishers, subscribers, servers, clients). Entries are claimed and freed under the
//! segment lock; their owner word tells others whether the participant is still alive.

use std::sync::atomic::Ordering;

use super::Region;
use crate::sync::ProcessId;

/// Offset of an entry's state word.
pub const ENTRY_STATE: usize = 0;
/// Offset of an entry's owner word (`ProcessId::pack`).
pub const ENTRY_OWNER: usize = 8;
/// Entry state: unused.
pub const FREE: u64 = 0;
/// Entry state: registered.
pub const ACTIVE: u64 = 1;

/// Whether the entry at `off` is registered (Acquire: pairs with the Release store in
/// [`claim_entry`], so the owner word read next is the one written before).
pub fn entry_active(r: &Region, off: usize) -> bool {
    r.u64_at(off + ENTRY_STATE).load(Ordering::Acquire) == ACTIVE
}

/// Whether the entry at `off` is unused (its state word is `FREE`; anything else, registered
/// or garbage, is not).
pub fn entry_free(r: &Region, off: usize) -> bool {
    // Acquire: as in `entry_active`.
    r.u64_at(off + ENTRY_STATE).load(Ordering::Acquire) == FREE
}

/// Whether the owner of the entry at `off` is alive.
pub fn entry_alive(r: &Region, off: usize) -> bool {
    // Relaxed: the owner word is read to judge liveness only; it is stable while the entry is
    // ACTIVE (written under the lock before the state).
    ProcessId::unpack(r.u64_at(off + ENTRY_OWNER).load(Ordering::Relaxed)).is_alive()
}

/// Whether the entry at `off` is registered to a live process.
pub fn entry_live(r: &Region, off: usize) -> bool {
    entry_active(r, off) && entry_alive(r, off)
}

/// Registers the current process in the entry at `off`. Runs under the lock.
pub fn claim_entry(r: &Region, off: usize) {
    // Relaxed: published by the Release store of ACTIVE below; all under the lock.
    r.u64_at(off + ENTRY_OWNER)
        .store(ProcessId::current().pack(), Ordering::Relaxed);
    r.u64_at(off + ENTRY_STATE).store(ACTIVE, Ordering::Release);
}

/// Marks the entry at `off` free. Runs under the lock, after the caller's own cleanup.
pub fn free_entry(r: &Region, off: usize) {
    // Release: the cleanup before is visible to whoever claims the entry next.
    r.u64_at(off + ENTRY_STATE).store(FREE, Ordering::Release);
}

/// Leaving without the lock (it stayed busy): an owner of pid 0 is dead to everyone, so the next
/// reclaim frees the entry as if this process had died.
pub fn abandon_entry(r: &Region, off: usize) {
    // Release: the entry's last state is published with it.
    r.u64_at(off + ENTRY_OWNER).store(0, Ordering::Release);
}

/// The first free entry among `offs` (index, offset) pairs.
pub fn find_free(r: &Region, offs: impl Iterator<Item = (usize, usize)>) -> Option<usize> {
    offs.into_iter()
        // Acquire: pairs with the Release store of FREE when an entry is left.
        .find(|(_, off)| r.u64_at(off + ENTRY_STATE).load(Ordering::Acquire) == FREE)
        .map(|(i, _)| i)
}
