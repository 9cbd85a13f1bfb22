//! A service segment shared by the handles of one process: joining, leaving, reclaiming the dead.
//!
//! Joins, leaves and reclaims run under the segment lock; the call path never takes it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::layout::*;
use crate::error::OpenError;
use crate::shm::entry::{
    abandon_entry, claim_entry, entry_active, entry_alive, entry_live, find_free, free_entry,
};
use crate::shm::{Backing, Header, OpenMode, Region, Segment, SegmentSpec, TypeIdentity};
use crate::sync::futex;

/// One mapped service segment and its validated layout.
pub(crate) struct ServiceShared {
    pub(crate) seg: Segment,
    pub(crate) layout: ServiceLayout,
    pub(crate) name: String,
}

/// The types a service carries.
pub(crate) struct Types {
    pub(crate) request: TypeIdentity,
    pub(crate) response: u64,
}

struct Spec<'a> {
    layout: &'a ServiceLayout,
    types: &'a Types,
}

impl SegmentSpec for Spec<'_> {
    fn segment_len(&self) -> usize {
        self.layout.len
    }

    fn init(&self, r: &Region) -> Result<(), OpenError> {
        // A zeroed segment is a valid empty service: every call slot UNUSED, every head 0.
        self.layout
            .header(self.types.request.clone(), self.types.response)
            .write(r)
    }

    fn check_layout(&self, r: &Region, h: &Header) -> Result<(), OpenError> {
        if h.kind != KIND_SERVICE {
            return Err(OpenError::Corrupt(format!(
                "a service file holds segment kind {}",
                h.kind
            )));
        }
        ServiceLayout::from_header(h, r.len()).map(|_| ())
    }

    fn check_type(&self, h: &Header) -> Result<(), OpenError> {
        let kinds = self.layout.config_kinds();
        if h.ty != self.types.request || h.config[6] != kinds || h.config[7] != self.types.response
        {
            return Err(OpenError::TypeMismatch {
                expected: format!(
                    "service of {} (response type word {:#x}, kinds {kinds:#x})",
                    self.types.request, self.types.response
                ),
                found: format!(
                    "service of {} (response type word {:#x}, kinds {:#x})",
                    h.ty, h.config[7], h.config[6]
                ),
            });
        }
        Ok(())
    }

    fn has_live_participants(&self, r: &Region) -> bool {
        let Ok(h) = Header::read(r) else { return false };
        let Ok(l) = ServiceLayout::from_header(&h, r.len()) else {
            return false;
        };
        any_live(r, &l)
    }
}

/// Which table to join.
#[derive(Clone, Copy)]
pub(crate) enum Role {
    Server,
    Client,
}

impl ServiceShared {
    /// Opens (or creates) service `name` and registers a server or a client in it; returns the
    /// entry index.
    pub(crate) fn open(
        backing: &Backing,
        name: &str,
        wanted: &ServiceLayout,
        types: &Types,
        role: Role,
        mode: OpenMode,
    ) -> Result<(Arc<ServiceShared>, usize), OpenError> {
        crate::shm::validate_name(name)?;
        let file = format!("service_{name}");
        let spec = Spec {
            layout: wanted,
            types,
        };
        let (seg, (layout, index)) = Segment::open(backing, &file, mode, &spec, |r| {
            let h = Header::read(r)?;
            let layout = ServiceLayout::from_header(&h, r.len())?;
            reclaim_dead(r, &layout);
            let index = match role {
                Role::Server => join_server(r, &layout)?,
                Role::Client => join_client(r, &layout)?,
            };
            Ok((layout, index))
        })?;
        Ok((
            Arc::new(ServiceShared {
                seg,
                layout,
                name: name.to_string(),
            }),
            index,
        ))
    }

    pub(crate) fn region(&self) -> &Region {
        self.seg.region()
    }

    pub(crate) fn ring(&self, c: usize) -> CallRing {
        self.layout.ring(self.region(), c)
    }

    /// Removes server `s`; removes the segment's name if nobody live is left.
    pub(crate) fn leave_server(&self, s: usize) {
        let off = self.layout.server_entry(s);
        self.seg.leave(
            |r| {
                free_server(r, &self.layout, s);
                !any_live(r, &self.layout)
            },
            |r| abandon_entry(r, off),
        );
    }

    /// Removes client `c` (its unanswered posted calls are cancelled); removes the segment's
    /// name if nobody live is left.
    pub(crate) fn leave_client(&self, c: usize) {
        let off = self.layout.client_entry(c);
        self.seg.leave(
            |r| {
                free_client(r, &self.layout, c);
                !any_live(r, &self.layout)
            },
            |r| abandon_entry(r, off),
        );
    }

    /// Whether a live server is registered. Reads `/proc` for each registered server: for slow
    /// paths only.
    pub(crate) fn any_live_server(&self) -> bool {
        let r = self.region();
        (0..self.layout.max_servers).any(|s| entry_live(r, self.layout.server_entry(s)))
    }

    /// Whether client entry `c` is registered to a live process.
    pub(crate) fn client_live(&self, c: usize) -> bool {
        c < self.layout.max_clients && entry_live(self.region(), self.layout.client_entry(c))
    }

    /// Whether server entry `s` is registered to a live process.
    pub(crate) fn server_live(&self, s: usize) -> bool {
        s < self.layout.max_servers && entry_live(self.region(), self.layout.server_entry(s))
    }

    /// Whether client entry `c` is registered to the process it was registered to when the
    /// caller saw owner word `owner`, and that process lives.
    pub(crate) fn client_still_there(&self, c: usize, owner: u64) -> bool {
        let r = self.region();
        let off = self.layout.client_entry(c);
        // Relaxed: the owner word is stable while the entry is active (written under the lock
        // before the Acquire-read state).
        entry_active(r, off)
            && self.ring(c).owner().load(Ordering::Relaxed) == owner
            && entry_alive(r, off)
    }

    /// Frees the entries of dead servers and clients, if the lock is free now.
    #[cold]
    pub(crate) fn reclaim_dead(&self) {
        if let Some(_guard) = self.seg.try_lock() {
            reclaim_dead(self.region(), &self.layout);
        }
    }

    /// Wakes one sleeping server (after a post, if `servers_waiting` was non-zero). Servers clear
    /// their own bits when they wake.
    #[cold]
    pub(crate) fn wake_server(&self) {
        let seq = self.region().u32_at(CTRL_REQUEST_SEQ);
        // SeqCst: a server that read the old value before sleeping gets EAGAIN or the wake.
        seq.fetch_add(1, Ordering::SeqCst);
        futex::wake(seq, 1);
    }

    /// Wakes client `c`, asleep waiting for a response.
    #[cold]
    pub(crate) fn wake_client(&self, c: usize) {
        let ring = self.ring(c);
        // SeqCst: as in `wake_server`.
        ring.wake().fetch_add(1, Ordering::SeqCst);
        futex::wake_all(ring.wake());
    }
}

fn any_live(r: &Region, l: &ServiceLayout) -> bool {
    (0..l.max_servers).any(|s| entry_live(r, l.server_entry(s)))
        || (0..l.max_clients).any(|c| entry_live(r, l.client_entry(c)))
}

/// Frees every entry whose owner died. Runs under the lock.
fn reclaim_dead(r: &Region, l: &ServiceLayout) {
    for s in 0..l.max_servers {
        let off = l.server_entry(s);
        if entry_active(r, off) && !entry_alive(r, off) {
            free_server(r, l, s);
        }
    }
    for c in 0..l.max_clients {
        let off = l.client_entry(c);
        if entry_active(r, off) && !entry_alive(r, off) {
            free_client(r, l, c);
        }
    }
}

fn join_server(r: &Region, l: &ServiceLayout) -> Result<usize, OpenError> {
    let s = find_free(r, (0..l.max_servers).map(|s| (s, l.server_entry(s)))).ok_or(
        OpenError::NoFreeEntry {
            role: "server",
            max: l.max_servers,
        },
    )?;
    claim_entry(r, l.server_entry(s));
    // SeqCst: clients read the bitmap to tell "no server" at once.
    r.u64_at(CTRL_SERVERS).fetch_or(1 << s, Ordering::SeqCst);
    Ok(s)
}

fn free_server(r: &Region, l: &ServiceLayout, s: usize) {
    // Locks the server held when it died are released (a leaving server holds none). The
    // calls it took name it in `taker` (stored before their claim).
    for c in 0..l.max_clients {
        // AcqRel: as a lock release; only under the segment lock, so entry s cannot have a new
        // owner holding the same lock value yet.
        let _ = l.ring(r, c).lock().compare_exchange(
            s as u64 + 1,
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
    r.u64_at(CTRL_SERVERS)
        .fetch_and(!(1 << s), Ordering::SeqCst);
    r.u64_at(CTRL_SERVERS_WAITING)
        .fetch_and(!(1 << s), Ordering::SeqCst);
    free_entry(r, l.server_entry(s));
}

fn join_client(r: &Region, l: &ServiceLayout) -> Result<usize, OpenError> {
    let c = find_free(r, (0..l.max_clients).map(|c| (c, l.client_entry(c)))).ok_or(
        OpenError::NoFreeEntry {
            role: "client",
            max: l.max_clients,
        },
    )?;
    claim_entry(r, l.client_entry(c));
    let ring = l.ring(r, c);
    // Relaxed: only this client and its servers' wake calls touch these; stale values cost a
    // spare wake at most.
    ring.waiting().store(0, Ordering::Relaxed);
    // SeqCst: servers poll the rings of the clients in this bitmap.
    r.u64_at(CTRL_CLIENTS).fetch_or(1 << c, Ordering::SeqCst);
    Ok(c)
}

fn free_client(r: &Region, l: &ServiceLayout, c: usize) {
    let ring = l.ring(r, c);
    // Under the segment lock. The client is gone or leaving, so a CLIENT_LOCK holder is its own
    // stale lock; a dead server holder is freed here; a live one is waited for a moment, and if
    // it keeps the lock the posted calls are left to the next owner of the entry to cancel.
    if let Some(lock) = acquire_for_free(r, l, &ring) {
        for slot in 0..l.in_flight {
            if let Status::Posted { pos } = ring.status(slot) {
                // Release: servers that see CANCELLED skip the position.
                ring.at(slot)
                    .state()
                    .store(call_state(pos, 0, CANCELLED), Ordering::Release);
            }
        }
        // Release: as a lock release.
        let _ = lock.compare_exchange(CLIENT_LOCK, 0, Ordering::Release, Ordering::Relaxed);
    }
    // SeqCst: bookkeeping under the lock; servers stop polling this ring.
    r.u64_at(CTRL_CLIENTS)
        .fetch_and(!(1 << c), Ordering::SeqCst);
    free_entry(r, l.client_entry(c));
}

/// Takes `ring`'s claim lock for `free_client` (under the segment lock); `None` if a live
/// server keeps it.
fn acquire_for_free<'r>(
    r: &Region,
    l: &ServiceLayout,
    ring: &'r CallRing,
) -> Option<&'r std::sync::atomic::AtomicU64> {
    let lock = ring.lock();
    for _ in 0..1000 {
        // Acquire: pairs with the holder's Release.
        match lock.compare_exchange(0, CLIENT_LOCK, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return Some(lock),
            Err(CLIENT_LOCK) => return Some(lock), // the leaving client's own, left by a crash
            Err(holder) if (1..=l.max_servers as u64).contains(&holder) => {
                let s = holder as usize - 1;
                if !entry_live(r, l.server_entry(s)) {
                    free_server(r, l, s);
                } else {
                    std::thread::yield_now();
                }
            }
            Err(_) => return None, // garbage: leave it
        }
    }
    None
}

/// Cancels the call in `slot` if no server has taken it; returns whether the slot holds no live
/// call afterwards (cancelled now or before, or never used). Takes the ring's claim lock, so no
/// server can take the call meanwhile; if the lock cannot be had (a server holds it for long),
/// answers false: the caller then treats the call as taken.
pub(crate) fn cancel_posted(shared: &ServiceShared, ring: &CallRing, slot: usize) -> bool {
    with_claim_lock(shared, ring, || match ring.status(slot) {
        Status::Posted { pos } => {
            // Release: servers that see CANCELLED skip the position.
            ring.state(slot)
                .store(call_state(pos, 0, CANCELLED), Ordering::Release);
            true
        }
        Status::Taken { .. } => false,
        _ => true,
    })
    .unwrap_or(false)
}

/// How long a client waits for its ring's claim lock before giving up (servers hold it for a few
/// loads and stores; only a preempted or dead holder keeps it longer).
const CLAIM_LOCK_WAIT: Duration = Duration::from_millis(100);

/// Runs `f` holding `ring`'s claim lock as its client. A lock left by a dead server (or by a
/// dead earlier owner of the client entry) is taken over.
pub(crate) fn with_claim_lock<T>(
    shared: &ServiceShared,
    ring: &CallRing,
    f: impl FnOnce() -> T,
) -> Option<T> {
    let lock = ring.lock();
    let mut start: Option<std::time::Instant> = None;
    let mut spins = 0u32;
    loop {
        // Acquire: pairs with the holder's Release store of 0.
        match lock.compare_exchange(0, CLIENT_LOCK, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => {
                let r = f();
                // Release: our stores under the lock are visible to the next holder.
                let _ = lock.compare_exchange(CLIENT_LOCK, 0, Ordering::Release, Ordering::Relaxed);
                return Some(r);
            }
            Err(holder) => {
                spins += 1;
                if spins < 64 {
                    std::hint::spin_loop();
                    continue;
                }
                match holder {
                    // Not us (we hold no lock while calling this): the stale lock of a dead
                    // earlier owner of this client entry. Nobody else uses this value.
                    CLIENT_LOCK => {
                        let r = f();
                        // Release: as any release of the lock.
                        let _ = lock.compare_exchange(
                            CLIENT_LOCK,
                            0,
                            Ordering::Release,
                            Ordering::Relaxed,
                        );
                        return Some(r);
                    }
                    // A dead server's lock is released by reclaiming its entry (under the segment
                    // lock, where no new server can take the same index meanwhile).
                    s if (1..=MAX_PARTICIPANTS as u64).contains(&s)
                        && !shared.server_live(s as usize - 1) =>
                    {
                        shared.reclaim_dead();
                    }
                    _ => {}
                }
                let now = std::time::Instant::now();
                if now >= *start.get_or_insert(now) + CLAIM_LOCK_WAIT {
                    return None;
                }
                std::thread::yield_now();
            }
        }
    }
}
