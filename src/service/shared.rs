//! A service segment shared by the handles of one process: joining, leaving, reclaiming the dead.
//!
//! Joins, leaves and reclaims run under the segment lock; the call path never takes it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::layout::*;
use crate::error::OpenError;
use crate::ring::call::{Env, Holder};
use crate::shm::entry::{self, entry_active, entry_alive, Members, Tables};
use crate::shm::{
    Backing, Header, OpenMode, Region, Segment, SegmentSpec, TypeIdentity,
};
use crate::sync::ProcessId;

crate::shm::segment_layout!(ServiceLayout, KIND_SERVICE, "service");

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
    type Layout = ServiceLayout;

    fn init(&self, r: &Region) -> Result<(), OpenError> {
        // A zeroed segment is a valid empty service: every call slot UNUSED, every head 0.
        self.layout
            .header(self.types.request.clone(), self.types.response)
            .write(r)
    }

    fn segment_len(&self) -> usize {
        self.layout.len
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
        let spec = Spec {
            layout: wanted,
            types,
        };
        let (seg, layout, index) = Segment::open_kind(backing, name, mode, &spec, |r, l| join(r, l, role))?;
        let name = name.to_string();
        Ok((Arc::new(ServiceShared { seg, layout, name }), index))
    }

    pub(crate) fn region(&self) -> &Region {
        self.seg.region()
    }

    pub(crate) fn ring(&self, c: usize) -> CallRing {
        self.layout.ring(self.region(), c)
    }

    /// Member `i` of `role` leaves (a client's unanswered posted calls are cancelled); the
    /// segment's name is removed if nobody live is left.
    pub(crate) fn leave(&self, role: Role, i: usize) {
        entry::leave(&self.seg, &self.layout, role, i);
    }

    /// Whether a live server is registered. Reads `/proc` for each registered server: for slow
    /// paths only.
    pub(crate) fn any_live_server(&self) -> bool {
        self.layout.table(Role::Server).any_live(self.region())
    }

    /// Whether entry `i` of `role` is registered to a live process.
    pub(crate) fn is_live(&self, role: Role, i: usize) -> bool {
        let t = self.layout.table(role);
        i < t.len && t.is_live(self.region(), i)
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
        entry::reclaim_dead_now(&self.seg, &self.layout);
    }

    /// If server `s` is registered to a dead process, reclaims it (which releases the claim
    /// locks it held), if the lock is free now.
    #[cold]
    pub(crate) fn reclaim_server_if_dead(&self, s: usize) {
        if s < self.layout.max_servers {
            entry::reclaim_if_dead(&self.seg, &self.layout, Role::Server, s);
        }
    }
}

fn join_server(r: &Region, l: &ServiceLayout) -> Result<usize, OpenError> {
    let s = l.join(r, Role::Server)?;
    // SeqCst: clients read the bitmap to tell "no server" at once.
    r.u64_at(CTRL_SERVERS).fetch_or(1u64 << s, Ordering::SeqCst);
    Ok(s)
}

fn join_client(r: &Region, l: &ServiceLayout) -> Result<usize, OpenError> {
    let c = l.join(r, Role::Client)?;
    // A corrupt or half-reclaimed entry may leave the doorbell's bit set: a spare wake at most.
    l.ring(r, c).bell().forget_all();
    // SeqCst: servers poll the rings of the clients in this bitmap.
    r.u64_at(CTRL_CLIENTS).fetch_or(1u64 << c, Ordering::SeqCst);
    Ok(c)
}

/// Reclaims the entries of dead members, then registers this process as a `role` in the
/// service of layout `l`; returns the entry index. Runs under the lock.
fn join(r: &Region, l: &ServiceLayout, role: Role) -> Result<usize, OpenError> {
    l.reclaim_dead(r);
    match role {
        Role::Server => join_server(r, l),
        Role::Client => join_client(r, l),
    }
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
            self.shared.reclaim_server_if_dead(s);
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
            self.shared.is_live(Role::Server, server)
        }
    }
}
