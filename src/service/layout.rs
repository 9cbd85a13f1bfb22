//! The byte layout of a service segment (layout version 4), every offset named and built in order
//! from named sizes. What the call ring's words mean and how they change is `ring::call`'s.
//!
//! ```text
//! 0                 segment header (HEADER_LEN = 256 B, see shm::header)
//! CTRL = 256        control block (CTRL_LEN = 2 lines)
//!   +0   servers          u64  bitmap of registered servers                CTRL_SERVERS
//!   +8   clients          u64  bitmap of registered clients (servers poll  CTRL_CLIENTS
//!                              their call rings)
//!   +16  fallbacks        u64  bitmap of fallback servers (a subset of     CTRL_FALLBACKS
//!                              servers: they take calls only while no
//!                              other server is registered)
//!   +24  servers_waiting  u64  servers' doorbell: sleeper bitmap          CTRL_SERVERS_WAITING
//!   +32  request_seq      u32  servers' doorbell: futex word              CTRL_REQUEST_SEQ
//! SERVER_TABLE = 384  S server entries of SERVER_ENTRY = 1 line
//!   +0   state            u64  0 free, 1 active                           shm::entry
//!   +8   owner            u64  pid << 32 | low 32 bits of start time      shm::entry
//! client_table(S) = SERVER_TABLE + S·SERVER_ENTRY
//!                   C client entries of CLIENT_ENTRY = 2 lines
//!   line 0, written by the client:
//!   +0   state            u64  as a server entry
//!   +8   owner            u64  as a server entry
//!   +16  waiting          u64  client's doorbell: sleeper bitmap (bit 0)  CLIENT_WAITING
//!   +24  timeouts         u64  calls the client gave up on at their       CLIENT_TIMEOUTS
//!                              timeout (for observers; written when one ends so: cold)
//!   +32  call timeout     u64  the client's call timeout in ns, written   CLIENT_CALL_TIMEOUT
//!                              when it joins (0: none); a relaying
//!                              server hands it on (Request::caller_timeout)
//!   +40  wake             u32  client's doorbell: futex word              CLIENT_WAKE
//!   line 1, written under the ring's claim lock (servers, at every take):
//!   +64  head             u64  ring::call `head`                           CLIENT_HEAD
//!   +72  lock             u64  ring::call `lock`                           CLIENT_LOCK_WORD
//! call_rings(S, C) = round_up(client_table + C·CLIENT_ENTRY, RING_ALIGN)
//!                   C call rings of ring_len(F, Q, R, K) bytes, ring c at + c·ring_len:
//!   claims: F entries of CLAIM_ENTRY = 16 B, then padding to a line (claims_len(F)); written
//!   by servers, on lines of their own:
//!   +16·i     claim       u64  ring::call `claim[i]`                      CLAIM_WORD
//!   +16·i+8   taker       u64  ring::call `taker[i]`                      CLAIM_TAKER
//!   then F call slots of call_stride = req_stride(Q) + K·item_stride(R):
//!   request part, req_stride(Q) = round_up(CALL_HEADER + Q, CACHE_LINE), written by the client:
//!   +0   state            u64  ring::call `state[i]`                      CALL_STATE
//!   +8   ended            u64  ring::call `ended[i]`                      CALL_ENDED
//!   +16  len              u64  request length                             CALL_LEN
//!   +24  consumed         u64  ring::call `consumed[i]`                   CALL_CONSUMED
//!   +32  request          Q bytes (max request size), 32-aligned          CALL_HEADER
//!   then K response items, item_stride(R) = round_up(ITEM_HEADER + R, CACHE_LINE), written by the
//!   server that holds the slot's call:
//!   +0   stamp            u64  item number + 1 (0: never written)         ITEM_STAMP
//!   +8   call             u64  position of the call the item answers      ITEM_CALL
//!   +16  len              u64  payload length                             ITEM_LEN
//!   +24  flags            u64  DATA | END | ABORTED, and with ABORTED     ITEM_FLAGS
//!                              a failure code << FAIL_SHIFT (ring::call)
//!   +32  payload          R bytes (max response size), 32-aligned          ITEM_HEADER
//! ```
//!
//! Total ([`segment_len`]): `call_rings(S, C) + C·ring_len(F, Q, R, K)` bytes, where
//! `ring_len = claims_len(F) + F·call_stride`. Each call slot's state, request length and consumed
//! count share the line the request starts on, and each item's stamp the line its payload starts
//! on: a small request or response is one line transfer.

use crate::error::OpenError;
use crate::loom::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::ring::call::{self, Cells, ClientLock, Holder};
use crate::shm::entry::{Table, Tables, ENTRY_OWNER};
pub use crate::shm::CACHE_LINE;
use crate::shm::{
    disjoint, one_line, Header, Region, TypeIdentity, CONFIG_WORDS, HEADER_LEN, U32, U64,
};
use crate::sync::Doorbell;
use crate::topic::{PayloadKind, MAX_ALIGN};

/// Segment kind of a service.
pub const KIND_SERVICE: u32 = 2;
/// Version of this kind's byte layout (header word 8), raised on every change of it: a segment
/// of another version is refused with [`OpenError::VersionMismatch`]. 2: the layout built from
/// named sizes, the call ring's protocol in `ring::call`, the sleep words used as doorbells
/// (`sync::Doorbell`: the client's sleep flag is a bitmap). 3: the client's timeout count.
/// 4: the fallback-server bitmap, failure codes in an aborted item's flags, the client's call
/// timeout in its entry.
pub const LAYOUT_VERSION: u32 = 4;

/// The control block.
pub const CTRL: usize = HEADER_LEN;
crate::shm::fields! { from CTRL;
    /// Bitmap of registered servers.
    pub CTRL_SERVERS: U64,
    /// Bitmap of registered clients.
    pub CTRL_CLIENTS: U64,
    /// Bitmap of registered fallback servers (`ServiceBuilder::fallback_server`).
    pub CTRL_FALLBACKS: U64,
    /// Doorbell of servers waiting for a call: sleeper bitmap (bit = server).
    pub CTRL_SERVERS_WAITING: U64,
    /// Doorbell of servers waiting for a call: futex word (u32).
    pub CTRL_REQUEST_SEQ: U32,
    CTRL_USED,
}
/// Length of the control block.
pub const CTRL_LEN: usize = 2 * CACHE_LINE;

/// Bytes of the words every entry starts with (state and owner, `shm::entry`).
pub const ENTRY_HEADER: usize = ENTRY_OWNER + U64;

/// The server table.
pub const SERVER_TABLE: usize = CTRL + CTRL_LEN;
/// Bytes per server entry (the entry words only).
pub const SERVER_ENTRY: usize = CACHE_LINE;

crate::shm::fields! { from ENTRY_HEADER;
    /// Client entry: doorbell of the client waiting for a response: sleeper bitmap (bit
    /// [`CLIENT_BIT`] while the client sleeps, the others for its awaited calls).
    pub CLIENT_WAITING: U64,
    /// Client entry: calls the client abandoned at their timeout (read by observers).
    pub CLIENT_TIMEOUTS: U64,
    /// Client entry: the client's call timeout in nanoseconds (0: none), written at its join.
    pub CLIENT_CALL_TIMEOUT: U64,
    /// Client entry: doorbell of the client waiting for a response: futex word (u32).
    pub CLIENT_WAKE: U32,
    CLIENT_LINE0_USED,
}
/// The client's bit in its own doorbell (it is the only member that sleeps on it). Its awaited
/// calls use the others: the call in slot `s` uses bit `1 + s % ASYNC_BITS`.
pub const CLIENT_BIT: usize = 0;
/// Bits of a client's doorbell used by its awaited calls (all but [`CLIENT_BIT`]).
pub const ASYNC_BITS: usize = 63;
crate::shm::fields! { from CACHE_LINE;
    /// Client entry: the call ring's `head`, on the entry's second line.
    pub CLIENT_HEAD: U64,
    /// Client entry: the call ring's claim lock.
    pub CLIENT_LOCK_WORD: U64,
    CLIENT_LINE1_USED,
}
/// Bytes per client entry.
pub const CLIENT_ENTRY: usize = 2 * CACHE_LINE;

/// Alignment of the first call ring.
pub const RING_ALIGN: usize = 2 * CACHE_LINE;

crate::shm::fields! { from 0;
    /// Claim entry: the claim word.
    pub CLAIM_WORD: U64,
    /// Claim entry: the taker's owner word.
    pub CLAIM_TAKER: U64,
    /// Bytes per claim entry.
    pub CLAIM_ENTRY,
}

crate::shm::fields! { from 0;
    /// Call slot: the state word.
    pub CALL_STATE: U64,
    /// Call slot: the `ended` word.
    pub CALL_ENDED: U64,
    /// Call slot: the request length.
    pub CALL_LEN: U64,
    /// Call slot: the consumed word.
    pub CALL_CONSUMED: U64,
    /// Bytes of call-slot header before the request.
    pub CALL_HEADER,
}

crate::shm::fields! { from 0;
    /// Item: the stamp.
    pub ITEM_STAMP: U64,
    /// Item: the position answered.
    pub ITEM_CALL: U64,
    /// Item: the payload length.
    pub ITEM_LEN: U64,
    /// Item: the flags.
    pub ITEM_FLAGS: U64,
    /// Bytes of item header before the payload.
    pub ITEM_HEADER,
}

const _: () = {
    // The control block: its words fit on its first line (clients read the server bitmap and
    // the doorbell at every call), and the tables start on a line.
    assert!(CTRL % CACHE_LINE == 0 && CTRL_USED <= CTRL + CTRL_LEN);
    assert!(one_line(CTRL_SERVERS, CTRL_USED - CTRL_SERVERS));
    assert!(CTRL_REQUEST_SEQ % U32 == 0);
    assert!(SERVER_TABLE % CACHE_LINE == 0 && ENTRY_HEADER <= SERVER_ENTRY);
    // A client entry: the entry words, then the client's doorbell, on line 0 (written by the
    // client); head and lock together on line 1 (written by servers at every take).
    assert!(CLIENT_WAITING >= ENTRY_HEADER && CLIENT_WAKE % U32 == 0);
    assert!(one_line(0, CLIENT_LINE0_USED) && CLIENT_HEAD % CACHE_LINE == 0);
    assert!(one_line(CLIENT_HEAD, CLIENT_LINE1_USED - CLIENT_HEAD));
    assert!(disjoint(
        0,
        CLIENT_LINE0_USED,
        CLIENT_HEAD,
        CLIENT_LINE1_USED - CLIENT_HEAD
    ));
    assert!(CLIENT_HEAD + CACHE_LINE <= CLIENT_ENTRY);
    assert!(CLIENT_ENTRY % CACHE_LINE == 0 && SERVER_ENTRY % CACHE_LINE == 0);
    // Claims never straddle a line; the claims area is padded to lines (`claims_len`).
    assert!(CACHE_LINE % CLAIM_ENTRY == 0);
    // A request and a response payload start on the line of their slot's / item's header, at
    // the alignment payload types may ask for.
    assert!(CALL_HEADER <= CACHE_LINE && CALL_HEADER % MAX_ALIGN == 0);
    assert!(ITEM_HEADER <= CACHE_LINE && ITEM_HEADER % MAX_ALIGN == 0);
    assert!(RING_ALIGN % CACHE_LINE == 0);
};

crate::numbered! { usize:
    /// Configuration word: max clients C.
    pub CONFIG_MAX_CLIENTS,
    /// Configuration word: max servers S.
    pub CONFIG_MAX_SERVERS,
    /// Configuration word: in flight per client F.
    pub CONFIG_IN_FLIGHT,
    /// Configuration word: max request size.
    pub CONFIG_MAX_REQUEST,
    /// Configuration word: max response size.
    pub CONFIG_MAX_RESPONSE,
    /// Configuration word: stream depth K.
    pub CONFIG_DEPTH,
    /// Configuration word: payload kinds (request | response << 8).
    pub CONFIG_KINDS,
    /// Configuration word: the response type's identity word.
    pub CONFIG_RESPONSE_TYPE,
}

/// Largest in-flight limit per client (call slots).
pub const MAX_IN_FLIGHT: usize = 1024;
/// Largest number of clients or servers of one service.
pub const MAX_PARTICIPANTS: usize = call::MAX_SERVERS;
/// Largest request or response size.
pub const MAX_MESSAGE_SIZE: usize = 1 << 30;
/// Largest stream depth (response items per call slot).
pub const MAX_STREAM_DEPTH: usize = 64;

const fn round_up(x: usize, to: usize) -> Option<usize> {
    match x.checked_add(to - 1) {
        Some(y) => Some(y / to * to),
        None => None,
    }
}

/// Offset of the client table for `servers` servers.
pub fn client_table(servers: usize) -> Option<usize> {
    SERVER_ENTRY.checked_mul(servers)?.checked_add(SERVER_TABLE)
}

/// Offset of the first call ring.
pub fn call_rings(servers: usize, clients: usize) -> Option<usize> {
    round_up(
        CLIENT_ENTRY
            .checked_mul(clients)?
            .checked_add(client_table(servers)?)?,
        RING_ALIGN,
    )
}

/// Bytes of a call ring's claims area.
pub fn claims_len(in_flight: usize) -> Option<usize> {
    round_up(CLAIM_ENTRY.checked_mul(in_flight)?, CACHE_LINE)
}

/// Bytes of a call slot's request part.
pub fn req_stride(max_request: usize) -> Option<usize> {
    round_up(CALL_HEADER.checked_add(max_request)?, CACHE_LINE)
}

/// Bytes of a response item.
pub fn item_stride(max_response: usize) -> Option<usize> {
    round_up(ITEM_HEADER.checked_add(max_response)?, CACHE_LINE)
}

/// Bytes of a call slot (request part and items).
pub fn call_stride(max_request: usize, max_response: usize, depth: usize) -> Option<usize> {
    item_stride(max_response)?
        .checked_mul(depth)?
        .checked_add(req_stride(max_request)?)
}

/// Bytes of one client's call ring.
pub fn ring_len(
    in_flight: usize,
    max_request: usize,
    max_response: usize,
    depth: usize,
) -> Option<usize> {
    call_stride(max_request, max_response, depth)?
        .checked_mul(in_flight)?
        .checked_add(claims_len(in_flight)?)
}

/// Bytes of a whole segment (`None` on overflow). Checks nothing else.
pub fn segment_len(
    clients: usize,
    servers: usize,
    in_flight: usize,
    max_request: usize,
    max_response: usize,
    depth: usize,
) -> Option<usize> {
    ring_len(in_flight, max_request, max_response, depth)?
        .checked_mul(clients)?
        .checked_add(call_rings(servers, clients)?)
}

/// Shape of a service, as stored in its header's configuration words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceLayout {
    pub(crate) max_clients: usize,
    pub(crate) max_servers: usize,
    pub(crate) in_flight: usize,
    pub(crate) max_request: usize,
    pub(crate) max_response: usize,
    pub(crate) depth: usize,
    pub(crate) kinds: (PayloadKind, PayloadKind),
    // Derived.
    client_table: usize,
    calls: usize,
    req_stride: usize,
    item_stride: usize,
    call_stride: usize,
    claims_len: usize,
    ring_len: usize,
    pub(crate) len: usize,
}

fn invalid(msg: String) -> OpenError {
    OpenError::InvalidConfig(msg)
}

fn kind_code(k: PayloadKind) -> u64 {
    k as u64
}

fn kind_of(c: u64) -> Option<PayloadKind> {
    match c {
        0 => Some(PayloadKind::Pod),
        1 => Some(PayloadKind::Bytes),
        2 => Some(PayloadKind::Rkyv),
        _ => None,
    }
}

impl ServiceLayout {
    /// Validates the parameters and computes the offsets.
    pub(crate) fn new(
        max_clients: usize,
        max_servers: usize,
        in_flight: usize,
        max_request: usize,
        max_response: usize,
        depth: usize,
        kinds: (PayloadKind, PayloadKind),
    ) -> Result<ServiceLayout, OpenError> {
        if !(1..=MAX_PARTICIPANTS).contains(&max_clients) {
            return Err(invalid(format!(
                "max clients {max_clients} must be in 1..={MAX_PARTICIPANTS}"
            )));
        }
        if !(1..=MAX_PARTICIPANTS).contains(&max_servers) {
            return Err(invalid(format!(
                "max servers {max_servers} must be in 1..={MAX_PARTICIPANTS}"
            )));
        }
        if !in_flight.is_power_of_two() || in_flight > MAX_IN_FLIGHT {
            return Err(invalid(format!(
                "max in flight {in_flight} must be a power of two in 1..={MAX_IN_FLIGHT}"
            )));
        }
        if !depth.is_power_of_two() || depth > MAX_STREAM_DEPTH {
            return Err(invalid(format!(
                "stream depth {depth} must be a power of two in 1..={MAX_STREAM_DEPTH}"
            )));
        }
        for (what, n) in [("request", max_request), ("response", max_response)] {
            if !(1..=MAX_MESSAGE_SIZE).contains(&n) {
                return Err(invalid(format!(
                    "max {what} size {n} must be in 1..={MAX_MESSAGE_SIZE}"
                )));
            }
        }
        let too_big = || invalid("service size overflows".into());
        let len = segment_len(
            max_clients,
            max_servers,
            in_flight,
            max_request,
            max_response,
            depth,
        )
        .filter(|l| *l <= isize::MAX as usize / 2)
        .ok_or_else(too_big)?;
        // Each below is a term of `len`, so none overflows.
        let unwrap = |x: Option<usize>| x.unwrap_or(usize::MAX);
        Ok(ServiceLayout {
            max_clients,
            max_servers,
            in_flight,
            max_request,
            max_response,
            depth,
            kinds,
            client_table: unwrap(client_table(max_servers)),
            calls: unwrap(call_rings(max_servers, max_clients)),
            req_stride: unwrap(req_stride(max_request)),
            item_stride: unwrap(item_stride(max_response)),
            call_stride: unwrap(call_stride(max_request, max_response, depth)),
            claims_len: unwrap(claims_len(in_flight)),
            ring_len: unwrap(ring_len(in_flight, max_request, max_response, depth)),
            len,
        })
    }

    /// Configuration words; `response_ty` is the response type's identity check word (see
    /// [`ServiceLayout::header`]).
    fn config_words(&self, response_ty: u64) -> [u64; CONFIG_WORDS] {
        let mut w = [0u64; CONFIG_WORDS];
        w[CONFIG_MAX_CLIENTS] = self.max_clients as u64;
        w[CONFIG_MAX_SERVERS] = self.max_servers as u64;
        w[CONFIG_IN_FLIGHT] = self.in_flight as u64;
        w[CONFIG_MAX_REQUEST] = self.max_request as u64;
        w[CONFIG_MAX_RESPONSE] = self.max_response as u64;
        w[CONFIG_DEPTH] = self.depth as u64;
        w[CONFIG_KINDS] = self.config_kinds();
        w[CONFIG_RESPONSE_TYPE] = response_ty;
        w
    }

    /// Configuration word [`CONFIG_KINDS`]: request and response payload kinds.
    pub(crate) fn config_kinds(&self) -> u64 {
        kind_code(self.kinds.0) | (kind_code(self.kinds.1) << 8)
    }

    /// Rebuilds a layout from an (untrusted) header and checks it against the segment length.
    pub(crate) fn from_header(h: &Header, region_len: usize) -> Result<ServiceLayout, OpenError> {
        h.check_version(LAYOUT_VERSION)?;
        let c = &h.config;
        let small = |w: u64| usize::try_from(w).unwrap_or(usize::MAX);
        let kinds = c[CONFIG_KINDS];
        let (Some(req), Some(resp)) = (kind_of(kinds & 0xff), kind_of(kinds >> 8)) else {
            return Err(OpenError::Corrupt(format!("unknown payload kinds {kinds}")));
        };
        let l = ServiceLayout::new(
            small(c[CONFIG_MAX_CLIENTS]),
            small(c[CONFIG_MAX_SERVERS]),
            small(c[CONFIG_IN_FLIGHT]),
            small(c[CONFIG_MAX_REQUEST]),
            small(c[CONFIG_MAX_RESPONSE]),
            small(c[CONFIG_DEPTH]),
            (req, resp),
        )
        .map_err(|e| OpenError::Corrupt(format!("service configuration: {e}")))?;
        if l.len != region_len {
            return Err(OpenError::Corrupt(format!(
                "layout needs {} bytes, segment has {region_len}",
                l.len
            )));
        }
        Ok(l)
    }

    /// Header for a new segment. The header's type is the request type; the response type is
    /// folded into configuration word [`CONFIG_RESPONSE_TYPE`] (a hash of its identity).
    pub(crate) fn header(&self, request: TypeIdentity, response_ty: u64) -> Header {
        Header {
            kind: KIND_SERVICE,
            version: LAYOUT_VERSION,
            segment_len: self.len as u64,
            ty: request,
            config: self.config_words(response_ty),
        }
    }

    pub(crate) fn client_entry(&self, c: usize) -> usize {
        self.table(Role::Client).entry(c)
    }

    /// The cells of client `c`'s call ring.
    #[inline]
    pub(crate) fn ring(&self, region: &Region, c: usize) -> CallRing {
        let c = c.min(self.max_clients - 1);
        let ring_len = self.ring_len;
        CallRing {
            claims_len: self.claims_len,
            call_stride: self.call_stride,
            req_stride: self.req_stride,
            item_stride: self.item_stride,
            // Bounds-checked once here; every access below stays inside these spans.
            ctrl: region.ptr(CTRL, CTRL_LEN),
            entry: region.ptr(self.client_entry(c), CLIENT_ENTRY),
            base: region.ptr(self.calls + ring_len * c, ring_len),
            slot_mask: self.in_flight - 1,
            item_mask: self.depth as u64 - 1,
        }
    }

    /// What server `i` leaves (its part of `Members::release`): the claim locks it held
    /// (`ring::call` invariant 7; a leaving server holds none), its bit in the server bitmap and
    /// in the servers' doorbell. The calls it took stay TAKEN and their clients find it gone.
    fn release_server(&self, r: &Region, i: usize) {
        for c in 0..self.max_clients {
            call::release_lock_of_dead(&self.ring(r, c), i);
        }
        // SeqCst: bookkeeping under the segment lock; clients read it as a hint.
        r.u64_at(CTRL_SERVERS)
            .fetch_and(!(1u64 << i), Ordering::SeqCst);
        // SeqCst: as above; fallback servers read it (with the server bitmap) as a hint.
        r.u64_at(CTRL_FALLBACKS)
            .fetch_and(!(1u64 << i), Ordering::SeqCst);
        self.request_bell(r).forget(i);
    }

    /// What client `i` leaves (its part of `Members::release`): its posted calls, cancelled here
    /// under its ring's claim lock (if a live server keeps that lock for long, they are left to
    /// the next owner of the entry), its bit in the client bitmap and its doorbell.
    fn release_client(&self, r: &Region, i: usize) {
        let ring = self.ring(r, i);
        let servers = self.table(Role::Server);
        // The client is gone or leaving, so a CLIENT_LOCK holder is its own stale lock (taken
        // over); the lock of a server that is not live is released (under the segment lock no
        // server can join meanwhile); a live holder is waited for a moment; garbage is left
        // alone.
        let busy = |holder: Holder, attempt: u32| match holder {
            Holder::Server(s) if attempt < 1000 && s < servers.len => {
                if servers.is_live(r, s) {
                    std::thread::yield_now();
                } else {
                    call::release_lock_of_dead(&ring, s);
                }
                true
            }
            _ => false,
        };
        if let Some(lock) = ClientLock::acquire(&ring, busy) {
            lock.cancel_all_posted();
        }
        // SeqCst: bookkeeping under the segment lock; servers stop polling this ring.
        r.u64_at(CTRL_CLIENTS)
            .fetch_and(!(1u64 << i), Ordering::SeqCst);
        // The client's own bit and those of its async calls (`ASYNC_BITS`).
        ring.bell().forget_all();
    }
}

crate::shm::entry::member_tables! {
    /// The two member tables of a service.
    ServiceLayout, |l| {
        // Servers first: releasing a client may wait for a server's claim lock, which a dead
        // server's release has freed by then.
        /// The server table.
        Server => Table::new(SERVER_TABLE, SERVER_ENTRY, l.max_servers, "server"),
        /// The client table (one call ring each).
        Client => Table::new(l.client_table, CLIENT_ENTRY, l.max_clients, "client"),
    }
    release: Server => release_server, Client => release_client;
}

impl ServiceLayout {
    /// The doorbell servers sleep on, waiting for a call.
    pub(crate) fn request_bell<'a>(&self, r: &'a Region) -> Doorbell<'a> {
        Doorbell::at(r, CTRL_REQUEST_SEQ, CTRL_SERVERS_WAITING)
    }
}

/// Identity word of a response type: FNV-1a over its name, size and alignment.
pub(crate) fn type_word(ty: &TypeIdentity) -> u64 {
    crate::shm::fnv1a(
        ty.name
            .bytes()
            .chain(ty.size.to_le_bytes())
            .chain(ty.align.to_le_bytes()),
    )
}

/// One client's call ring inside a mapped service: its words as `ring::call` [`Cells`], its
/// request and response areas, and the client entry's and control block's words.
///
/// Built with its spans bounds-checked (the control block, the client entry and the ring's call
/// slots); slot and item indices are masked, so every access stays inside them whatever the
/// caller passes. It holds raw pointers into a mapped region: it must live beside (never outlive)
/// the `Arc` that keeps that region mapped, as in `ClientCore` and `ServerCore`.
pub(crate) struct CallRing {
    claims_len: usize,
    call_stride: usize,
    req_stride: usize,
    item_stride: usize,
    ctrl: *mut u8,
    entry: *mut u8,
    base: *mut u8,
    slot_mask: usize,
    item_mask: u64,
}

// SAFETY: the pointers address atomics and payload bytes of a shared mapping, which any thread
// may access through atomics and the ring protocol; the owner keeps the mapping alive.
unsafe impl Send for CallRing {}

impl CallRing {
    /// Byte offset of `slot`'s claim entry within the ring.
    #[inline(always)]
    fn claim_entry(&self, slot: usize) -> usize {
        CLAIM_ENTRY * (slot & self.slot_mask)
    }

    /// Byte offset of `slot` within the ring.
    #[inline(always)]
    fn slot(&self, slot: usize) -> usize {
        self.claims_len + self.call_stride * (slot & self.slot_mask)
    }

    /// Byte offset of item `n` of `slot` within the ring.
    #[inline(always)]
    fn item(&self, slot: usize, n: u64) -> usize {
        self.slot(slot) + self.req_stride + self.item_stride * (n & self.item_mask) as usize
    }

    #[inline(always)]
    fn word(&self, off: usize) -> &AtomicU64 {
        debug_assert!(
            off % 8 == 0 && off + 8 <= self.claims_len + self.call_stride * (self.slot_mask + 1)
        );
        // SAFETY: `off` is a claim, slot or item offset (index masked into the ring) plus a
        // header offset below its header's size, so it lies inside the ring span checked in
        // `ServiceLayout::ring`; it is 8-aligned (strides and `claims_len` are multiples of 64,
        // the span starts 64-aligned in a page-aligned region). AtomicU64 accepts any bits; the
        // region outlives the ring (see the type's docs).
        unsafe { &*(self.base.add(off) as *const AtomicU64) }
    }

    #[inline(always)]
    fn entry_word(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off % 8 == 0 && off + 8 <= CLIENT_ENTRY);
        // SAFETY: `off` is one of the entry's named offsets (< CLIENT_ENTRY), inside the entry
        // span checked in `ServiceLayout::ring`, 8-aligned (entries are line-aligned).
        unsafe { &*(self.entry.add(off) as *const AtomicU64) }
    }

    /// A word of the control block.
    #[inline(always)]
    fn ctrl_word(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off % 8 == 0 && off >= CTRL && off + 8 <= CTRL + CTRL_LEN);
        // SAFETY: `off` is a named control offset inside the control span checked in
        // `ServiceLayout::ring`, 8-aligned (the block starts on a line).
        unsafe { &*(self.ctrl.add(off - CTRL) as *const AtomicU64) }
    }

    /// The control block's bitmap of registered servers.
    #[inline]
    pub(crate) fn servers(&self) -> &AtomicU64 {
        self.ctrl_word(CTRL_SERVERS)
    }
    /// The control block's bitmap of registered clients.
    #[inline]
    pub(crate) fn clients(&self) -> &AtomicU64 {
        self.ctrl_word(CTRL_CLIENTS)
    }
    /// The doorbell servers sleep on, waiting for a call (in the control block).
    #[inline]
    pub(crate) fn request_bell(&self) -> Doorbell<'_> {
        // SAFETY: CTRL_REQUEST_SEQ is a 4-aligned named offset inside the control span checked
        // in `ServiceLayout::ring`.
        let seq = unsafe { &*(self.ctrl.add(CTRL_REQUEST_SEQ - CTRL) as *const AtomicU32) };
        Doorbell::new(seq, self.ctrl_word(CTRL_SERVERS_WAITING))
    }
    /// The doorbell this ring's client sleeps on, waiting for a response (in its entry).
    #[inline]
    pub(crate) fn bell(&self) -> Doorbell<'_> {
        // SAFETY: CLIENT_WAKE is a 4-aligned offset inside the checked entry span.
        let seq = unsafe { &*(self.entry.add(CLIENT_WAKE) as *const AtomicU32) };
        Doorbell::new(seq, self.entry_word(CLIENT_WAITING))
    }
    /// The client entry's count of calls given up at their timeout.
    #[inline]
    pub(crate) fn timeouts(&self) -> &AtomicU64 {
        self.entry_word(CLIENT_TIMEOUTS)
    }
    /// The client entry's owner word.
    #[inline]
    pub(crate) fn owner(&self) -> &AtomicU64 {
        self.entry_word(ENTRY_OWNER)
    }

    /// The request area of `slot`: `max_request_size` bytes, 32-aligned.
    #[inline]
    pub(crate) fn request(&self, slot: usize) -> *mut u8 {
        // SAFETY: the slot's request area lies inside the ring span checked in
        // `ServiceLayout::ring` (slot masked; CALL_HEADER + max_request ≤ req_stride ≤
        // call_stride).
        unsafe { self.base.add(self.slot(slot) + CALL_HEADER) }
    }

    /// The payload area of item `n` of `slot`: `max_response_size` bytes, 32-aligned.
    #[inline]
    pub(crate) fn item_payload(&self, slot: usize, n: u64) -> *mut u8 {
        // SAFETY: the item lies inside the ring span checked in `ServiceLayout::ring` (indices
        // masked; ITEM_HEADER + max_response ≤ item_stride).
        unsafe { self.base.add(self.item(slot, n) + ITEM_HEADER) }
    }
}

/// `Cells` accessors of a call ring's words, each `#[inline(always)]`: `name => FIELD` is the word
/// at `FIELD` of the client entry (through `entry_word`), `name(args) => area + FIELD` the word at
/// `FIELD` of the ring area (claim entry, call slot or item) that `self.area(args)` locates
/// (through `word`). Both readers check bounds and alignment (see their SAFETY comments).
macro_rules! ring_words {
    () => {};
    ($name:ident => $field:ident, $($rest:tt)*) => {
        #[inline(always)]
        fn $name(&self) -> &AtomicU64 {
            self.entry_word($field)
        }
        ring_words!($($rest)*);
    };
    ($name:ident($($arg:ident: $t:ty),+) => $area:ident + $field:ident, $($rest:tt)*) => {
        #[inline(always)]
        fn $name(&self, $($arg: $t),+) -> &AtomicU64 {
            self.word(self.$area($($arg),+) + $field)
        }
        ring_words!($($rest)*);
    };
}

impl Cells for CallRing {
    #[inline(always)]
    fn slot_mask(&self) -> u64 {
        self.slot_mask as u64
    }
    #[inline(always)]
    fn item_mask(&self) -> u64 {
        self.item_mask
    }
    ring_words! {
        head => CLIENT_HEAD,
        lock => CLIENT_LOCK_WORD,
        claim(slot: usize) => claim_entry + CLAIM_WORD,
        taker(slot: usize) => claim_entry + CLAIM_TAKER,
        state(slot: usize) => slot + CALL_STATE,
        ended(slot: usize) => slot + CALL_ENDED,
        len(slot: usize) => slot + CALL_LEN,
        consumed(slot: usize) => slot + CALL_CONSUMED,
        stamp(slot: usize, n: u64) => item + ITEM_STAMP,
        item_call(slot: usize, n: u64) => item + ITEM_CALL,
        item_len(slot: usize, n: u64) => item + ITEM_LEN,
        item_flags(slot: usize, n: u64) => item + ITEM_FLAGS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: (PayloadKind, PayloadKind) = (PayloadKind::Bytes, PayloadKind::Pod);

    #[test]
    fn formula_matches_layout() {
        let l = ServiceLayout::new(8, 4, 16, 100, 8, 2, K).unwrap();
        let calls = (384 + 64 * 4 + 128 * 8usize).div_ceil(128) * 128;
        assert_eq!(l.len, calls + 8 * (16 * 16 + 16 * (192 + 2 * 64)));
        assert_eq!(l.calls, calls);
        assert_eq!(segment_len(8, 4, 16, 100, 8, 2), Some(l.len));
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(ServiceLayout::new(0, 1, 1, 8, 8, 1, K).is_err());
        assert!(ServiceLayout::new(1, 65, 1, 8, 8, 1, K).is_err());
        assert!(ServiceLayout::new(1, 1, 3, 8, 8, 1, K).is_err());
        assert!(ServiceLayout::new(1, 1, 2048, 8, 8, 1, K).is_err());
        assert!(ServiceLayout::new(1, 1, 1, 0, 8, 1, K).is_err());
        assert!(ServiceLayout::new(1, 1, 1, 8, 8, 3, K).is_err());
        assert!(ServiceLayout::new(1, 1, 1, 8, 8, 128, K).is_err());
        assert_eq!(segment_len(usize::MAX, 1, 1, 8, 8, 1), None);
    }

    #[test]
    fn ring_words_sit_where_the_diagram_says() {
        let l = ServiceLayout::new(2, 1, 4, 40, 8, 2, K).unwrap();
        let r = Region::heap(l.len);
        let ring = l.ring(&r, 1);
        let base = r.ptr(0, l.len) as usize;
        let at = |w: &AtomicU64| w as *const AtomicU64 as usize - base;
        let entry = l.client_entry(1);
        let rings = l.calls + l.ring_len;
        assert_eq!(at(ring.head()), entry + CLIENT_HEAD);
        assert_eq!(at(ring.lock()), entry + CLIENT_LOCK_WORD);
        assert_eq!(at(ring.claim(5)), rings + CLAIM_ENTRY);
        assert_eq!(at(ring.taker(1)), rings + CLAIM_ENTRY + CLAIM_TAKER);
        let slot1 = rings + l.claims_len + l.call_stride;
        assert_eq!(at(ring.state(1)), slot1);
        assert_eq!(at(ring.consumed(1)), slot1 + CALL_CONSUMED);
        assert_eq!(ring.request(1) as usize - base, slot1 + CALL_HEADER);
        let item3 = slot1 + l.req_stride + l.item_stride;
        assert_eq!(at(ring.stamp(1, 3)), item3);
        assert_eq!(at(ring.item_flags(1, 3)), item3 + ITEM_FLAGS);
        assert_eq!(ring.item_payload(1, 3) as usize - base, item3 + ITEM_HEADER);
        assert_eq!(l.req_stride, 128);
        assert_eq!(rings % CACHE_LINE, 0);
    }

    #[test]
    fn state_words_round_trip() {
        use crate::ring::call::{call_state, split_state, CANCELLED, MAX_POSITION, TAKEN};
        let w = call_state(MAX_POSITION, 63, CANCELLED);
        assert_eq!(split_state(w), (MAX_POSITION, 63, CANCELLED));
        assert_eq!(split_state(call_state(5, 2, TAKEN)), (5, 2, TAKEN));
    }
}
