//! A service segment shared by the handles of one process: joining, leaving, reclaiming the dead.
//!
//! Joins, leaves and reclaims run under the segment lock; the call path never takes it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::layout::*;
use crate::error::OpenError;
use crate::ring::call::{self, ClientLock, Env, Holder};
use crate::shm::entry::{
    abandon_entry, claim_entry, entry_active, entry_alive, entry_live, find_free, free_entry,
};
use crate::shm::{Backing, Header, OpenMode, Region, Segment, SegmentSpec, TypeIdentity};
use crate::sync::{futex, ProcessId};

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
    // calls it took stay TAKEN, naming it in `taker`: their clients find it dead.
    for c in 0..l.max_clients {
        call::release_lock_of_dead(&l.ring(r, c), s);
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
    // stale lock (taken over); a dead server holder is freed here; a live one is waited for a
    // moment, and if it keeps the lock the posted calls are left to the next owner of the entry
    // to cancel.
    let busy = |holder: Holder, attempt: u32| match holder {
        Holder::Server(s) if attempt < 1000 && s < l.max_servers => {
            if !entry_live(r, l.server_entry(s)) {
                free_server(r, l, s);
            } else {
                std::thread::yield_now();
            }
            true
        }
        _ => false, // garbage, or held for long: leave it
    };
    if let Some(lock) = ClientLock::acquire(&ring, busy) {
        lock.cancel_all_posted();
    }
    // SeqCst: bookkeeping under the lock; servers stop polling this ring.
    r.u64_at(CTRL_CLIENTS)
        .fetch_and(!(1 << c), Ordering::SeqCst);
    free_entry(r, l.client_entry(c));
}

/// How long a client waits for its ring's claim lock before giving up (servers hold it for a few
/// loads and stores; only a preempted or dead holder keeps it longer).
const CLAIM_LOCK_WAIT: Duration = Duration::from_millis(100);

/// What the call ring asks of a client's service: how to wait for its claim lock, whether a
/// server lives.
pub(crate) struct ClientEnv<'a> {
    shared: &'a ServiceShared,
    start: Option<Instant>,
}

impl<'a> ClientEnv<'a> {
    pub(crate) fn new(shared: &'a ServiceShared) -> Self {
        ClientEnv {
            shared,
            start: None,
        }
    }
}

impl Env for ClientEnv<'_> {
    fn lock_busy(&mut self, holder: Holder, attempt: u32) -> bool {
        if attempt == 0 {
            self.start = None;
        }
        if attempt < 64 {
            std::hint::spin_loop();
            return true;
        }
        // A dead server's lock is released by reclaiming its entry (under the segment lock,
        // where no new server can take the same index meanwhile).
        if let Holder::Server(s) = holder {
            if !self.shared.server_live(s) {
                self.shared.reclaim_dead();
            }
        }
        let now = Instant::now();
        if now >= *self.start.get_or_insert(now) + CLAIM_LOCK_WAIT {
            return false;
        }
        std::thread::yield_now();
        true
    }

    fn taker_alive(&mut self, server: usize, taker: u64) -> bool {
        // 0 only if the server died before its claim was complete: then its entry tells.
        if taker != 0 {
            ProcessId::unpack(taker).is_alive()
        } else {
            self.shared.server_live(server)
        }
    }
}
