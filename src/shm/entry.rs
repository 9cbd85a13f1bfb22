//! The membership layer: participant tables, written once for every pattern.
//!
//! Every segment kind keeps two tables of members (publishers and subscribers, servers and
//! clients, producers and consumers). An entry starts with a `state` word and an `owner` word
//! (the member's [`ProcessId`]); what follows is the pattern's. Entries are claimed and freed
//! under the segment lock; the owner word tells others whether the member is still alive.
//!
//! A pattern describes its tables and what a departed member leaves behind by implementing
//! [`Members`]; joining, leaving, any-live and reclaiming the dead are then this module's:
//! - [`Members::join`]: the first free entry of a table, claimed with this process's identity;
//! - [`Members::reclaim_dead`]: every entry whose owner died is released (the pattern's
//!   [`Members::release`]: pins, waiter bits, deliveries, calls) and freed;
//! - [`leave`]: release and free our own entry, and remove the segment's name if nobody live is
//!   left (or, if the lock stays busy, mark the entry dead so the next reclaim frees it);
//! - [`Members::any_live`]: whether a segment still has a live member.

use std::sync::atomic::Ordering;

use super::{Region, Segment};
use crate::error::OpenError;
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
fn entry_free(r: &Region, off: usize) -> bool {
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
fn entry_live(r: &Region, off: usize) -> bool {
    entry_active(r, off) && entry_alive(r, off)
}

/// Registers the current process in the entry at `off`. Runs under the lock.
fn claim_entry(r: &Region, off: usize) {
    // Relaxed: published by the Release store of ACTIVE below; all under the lock.
    r.u64_at(off + ENTRY_OWNER)
        .store(ProcessId::current().pack(), Ordering::Relaxed);
    r.u64_at(off + ENTRY_STATE).store(ACTIVE, Ordering::Release);
}

/// Marks the entry at `off` free. Runs under the lock, after the caller's own cleanup.
fn free_entry(r: &Region, off: usize) {
    // Release: the cleanup before is visible to whoever claims the entry next.
    r.u64_at(off + ENTRY_STATE).store(FREE, Ordering::Release);
}

/// Leaving without the lock (it stayed busy): an owner of pid 0 is dead to everyone, so the next
/// reclaim frees the entry as if this process had died.
fn abandon_entry(r: &Region, off: usize) {
    // Release: the entry's last state is published with it.
    r.u64_at(off + ENTRY_OWNER).store(0, Ordering::Release);
}

/// One table of member entries in a segment: `len` entries of `stride` bytes from `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// Offset of entry 0.
    pub base: usize,
    /// Bytes per entry.
    pub stride: usize,
    /// Number of entries.
    pub len: usize,
    /// What a member of this table is called in errors ("publisher", "consumer", ...).
    pub role: &'static str,
}

impl Table {
    /// `len` entries of `stride` bytes from `base`, of members called `role`.
    pub const fn new(base: usize, stride: usize, len: usize, role: &'static str) -> Table {
        Table {
            base,
            stride,
            len,
            role,
        }
    }

    /// Offset of entry `i`.
    pub fn entry(&self, i: usize) -> usize {
        debug_assert!(i < self.len);
        self.base + i * self.stride
    }

    /// Whether entry `i` is registered to a live process.
    pub fn is_live(&self, r: &Region, i: usize) -> bool {
        entry_live(r, self.entry(i))
    }

    /// The process entry `i` is registered to, or `None` if the entry is free (a garbage state
    /// word reads as registered to whatever its owner word names).
    pub fn owner(&self, r: &Region, i: usize) -> Option<ProcessId> {
        let off = self.entry(i);
        // Relaxed: an observer's snapshot; the owner word is stable while the entry is taken,
        // and `entry_free` (Acquire) was read first.
        (!entry_free(r, off))
            .then(|| ProcessId::unpack(r.u64_at(off + ENTRY_OWNER).load(Ordering::Relaxed)))
    }

    /// Whether any entry is registered to a live process.
    pub fn any_live(&self, r: &Region) -> bool {
        (0..self.len).any(|i| self.is_live(r, i))
    }

    /// How many entries are registered (live or not).
    pub fn active(&self, r: &Region) -> usize {
        (0..self.len)
            .filter(|&i| entry_active(r, self.entry(i)))
            .count()
    }

    /// Whether entry `i` is taken (registered, or garbage) and its owner is dead: a member to
    /// reclaim.
    pub fn is_dead(&self, r: &Region, i: usize) -> bool {
        let off = self.entry(i);
        !entry_free(r, off) && !entry_alive(r, off)
    }
}

/// A segment kind's two member tables (declared with [`member_tables!`]).
pub trait Tables {
    /// Names the two tables (e.g. publishers and subscribers).
    type Role: Copy;
    /// Every role, in the order reclaim visits them.
    const ROLES: [Self::Role; 2];

    /// The table of `role`.
    fn table(&self, role: Self::Role) -> Table;
}

/// Declares a segment kind's `Role` enum (its two tables, in the order reclaim visits them) and
/// implements [`Tables`] and [`Members`] for its layout. First `Variant => table`, each table an
/// expression over the layout, bound to the name given between bars; then
/// `release: Variant => hook, …;`, naming for each role the layout's method
/// `fn hook(&self, r: &Region, i: usize)` that releases what member `i` of that role leaves behind
/// (it is [`Members::release`] for that role); then the other [`Members`] items the kind
/// overrides, if any.
macro_rules! member_tables {
    ($(#[$m:meta])* $layout:ty, |$l:ident| {
        $($(#[$vm:meta])* $role:ident => $table:expr,)+
    }
    release: $($released:ident => $hook:ident),+;
    $($members:tt)*) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Role {
            $($(#[$vm])* $role,)+
        }

        impl $crate::shm::entry::Tables for $layout {
            type Role = Role;
            const ROLES: [Role; 2] = [$(Role::$role),+];

            #[inline]
            fn table(&self, role: Role) -> $crate::shm::entry::Table {
                let $l = self;
                match role {
                    $(Role::$role => $table,)+
                }
            }
        }

        impl $crate::shm::entry::Members for $layout {
            fn release(&self, r: &$crate::shm::Region, role: Role, i: usize) {
                match role {
                    $(Role::$released => self.$hook(r, i),)+
                }
            }

            $($members)*
        }
    };
}
pub(crate) use member_tables;

/// What a departed member of a segment kind leaves behind, and the membership operations.
pub trait Members: Tables {
    /// Releases what member `i` of `role` holds in the segment (pins, waiter bits, claimed calls,
    /// deliveries), before its entry is freed. Runs under the segment lock, for a member that
    /// leaves or died; must tolerate a member that died half-way through its join. Written by
    /// [`member_tables!`], which calls the kind's hook for `role`.
    fn release(&self, r: &Region, role: Self::Role, i: usize);

    /// Prepares entry `i` of `role`, about to be claimed by a joining member, for its new owner
    /// (before the claim publishes it). Runs under the lock. Nothing by default.
    fn joining(&self, _r: &Region, _role: Self::Role, _i: usize) {}

    /// Claims the first free entry of `role`'s table for this process. Runs under the lock.
    fn join(&self, r: &Region, role: Self::Role) -> Result<usize, OpenError> {
        let t = self.table(role);
        let i = (0..t.len)
            .find(|&i| entry_free(r, t.entry(i)))
            .ok_or(OpenError::NoFreeEntry {
                role: t.role,
                max: t.len,
            })?;
        self.joining(r, role, i);
        claim_entry(r, t.entry(i));
        Ok(i)
    }

    /// Whether the segment outlives its members: [`leave`] then never removes it, even when
    /// nobody live is left (a durable queue, repaired by the next open instead).
    fn outlives_members(&self) -> bool {
        false
    }

    /// Whether any member of either table is registered to a live process.
    fn any_live(&self, r: &Region) -> bool {
        Self::ROLES.iter().any(|&role| self.table(role).any_live(r))
    }

    /// Releases and frees every entry whose owner died. Runs under the lock.
    fn reclaim_dead(&self, r: &Region) {
        self.reclaim_where(r, |t, i| t.is_dead(r, i));
    }

    /// Releases and frees every entry that is not free, whatever its owner: for recovery, when
    /// no member can be alive. Runs under the lock.
    fn reclaim_all(&self, r: &Region) {
        self.reclaim_where(r, |t, i| !entry_free(r, t.entry(i)));
    }

    /// Releases and frees the entries `gone` picks.
    #[doc(hidden)]
    fn reclaim_where(&self, r: &Region, gone: impl Fn(&Table, usize) -> bool) {
        for role in Self::ROLES {
            let t = self.table(role);
            for i in 0..t.len {
                if gone(&t, i) {
                    log_reclaim(r, &t, i);
                    self.release(r, role, i);
                    free_entry(r, t.entry(i));
                }
            }
        }
    }
}

/// Member `i` of `role` leaves `seg`: under the lock, releases and frees its entry, and removes the
/// segment's name if nobody live is left. If the lock stays busy, marks the entry dead instead, so
/// the next reclaim frees it.
pub fn leave<M: Members>(seg: &Segment, m: &M, role: M::Role, i: usize) {
    let off = m.table(role).entry(i);
    seg.leave(
        |r| {
            // Only our own entry: a reclaim may have freed it (we looked dead) and another member
            // may hold it now.
            if owned_by_us(r, off) {
                m.release(r, role, i);
                free_entry(r, off);
            }
            !m.outlives_members() && !m.any_live(r)
        },
        |r| {
            if owned_by_us(r, off) {
                abandon_entry(r, off);
            }
        },
    );
}

/// If member `i` of `role` is registered to a dead process, reclaims it (if the lock is free now).
/// Returns whether it was reclaimed. For a waiter that suspects the member it waits for.
pub fn reclaim_if_dead<M: Members>(seg: &Segment, m: &M, role: M::Role, i: usize) -> bool {
    let r = seg.region();
    let t = m.table(role);
    if !t.is_dead(r, i) {
        return false;
    }
    let Some(_guard) = seg.try_lock() else {
        return false;
    };
    // Recheck under the lock: someone else may have reclaimed it, or a new owner joined.
    if t.is_dead(r, i) {
        log_reclaim(r, &t, i);
        m.release(r, role, i);
        free_entry(r, t.entry(i));
        true
    } else {
        false
    }
}

/// Frees the entries of dead members, if the segment lock is free now. Housekeeping for hot
/// paths, which call it rarely.
#[cold]
pub fn reclaim_dead_now<M: Members>(seg: &Segment, m: &M) {
    if let Some(_guard) = seg.try_lock() {
        m.reclaim_dead(seg.region());
    }
}

/// Logs that entry `i` of table `t`, registered to a dead process (or found so by a recovery), is
/// being reclaimed. Cold: reclaims are rare.
#[cold]
fn log_reclaim(r: &Region, t: &Table, i: usize) {
    // Relaxed: read for the log only.
    let owner = ProcessId::unpack(r.u64_at(t.entry(i) + ENTRY_OWNER).load(Ordering::Relaxed));
    crate::log_rare!(
        info,
        role = t.role,
        entry = i,
        pid = owner.pid,
        "reclaimed the entry of a dead participant"
    );
    let _ = owner;
}

/// Whether the entry at `off` is registered to this process.
fn owned_by_us(r: &Region, off: usize) -> bool {
    // Relaxed: the owner word is written under the lock we hold.
    entry_active(r, off)
        && r.u64_at(off + ENTRY_OWNER).load(Ordering::Relaxed) == ProcessId::current().pack()
}
