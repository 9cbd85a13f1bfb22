//! The byte layout of a service segment, every offset named.
//!
//! ```text
//! 0                    segment header (256 B, see shm::header)
//! 256                  control block (128 B)
//!   +0   servers          u64  bitmap of registered servers
//!   +8   clients          u64  bitmap of registered clients (servers poll their call rings)
//!   +16  servers_waiting  u64  bitmap of servers asleep on `request_seq`
//!   +24  request_seq      u32  futex word servers sleep on
//! 384                  server table: S entries of 64 B
//!   +0   state         u64  0 free, 1 active
//!   +8   owner         u64  pid << 32 | low 32 bits of start time
//! ..                   client table: C entries of 128 B
//!   +0   state         u64  0 free, 1 active
//!   +8   owner         u64  as above
//!   +16  waiting       u64  1 while the client sleeps on `wake`
//!   +24  wake          u32  futex word the client sleeps on
//!   +64  head          u64  next call position no server has looked at (moved under `lock`)
//!   +72  lock          u64  claim lock: 0 free, s + 1 held by server s, CLIENT_LOCK by the client
//! ..                   call rings, 128-aligned: C rings, each `claims_len` bytes of claims then
//!                      F call slots of `call_stride` bytes
//!   claims (`claims_len` = round_up(16·F, 64) bytes), written by servers under `lock`:
//!   +16·i  claim       u64  position << 8 | server << 2 | kind (TAKEN, or CANCELLED: released)
//!   +16·i+8 taker      u64  owner word of the server that took slot i's call
//!   request part of a call slot (`req_stride` = round_up(32 + max_request_size, 64) bytes),
//!   written by the client:
//!   +0   state         u64  position << 8 | kind (UNUSED, POSTED, CANCELLED)
//!   +8   ended         u64  position + 1 of the last call of this slot whose END was read
//!   +16  len           u64  request length
//!   +24  consumed      u64  responses consumed from this slot, ever (bits 0..61), ABANDONED (62)
//!   +32  request       max_request_size bytes
//!   then K response items of `item_stride` = round_up(32 + max_response_size, 64) bytes:
//!   +0   stamp         u64  item number + 1 (0: never written)
//!   +8   call          u64  position of the call the item answers
//!   +16  len           u64  payload length
//!   +24  flags         u64  DATA | END | ABORTED
//!   +32  payload       max_response_size bytes
//! ```
//!
//! Total: `round_up(384 + 64·S + 128·C, 128) + C·(claims_len + F·(req_stride + K·item_stride))`
//! bytes.

use crate::error::OpenError;
use crate::shm::{Header, Region, TypeIdentity, CONFIG_WORDS, HEADER_LEN};
use crate::topic::PayloadKind;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Segment kind of a service.
pub const KIND_SERVICE: u32 = 2;
/// Version of this kind's byte layout (header word 8), raised on every change of it: a segment
/// of another version is refused with [`OpenError::VersionMismatch`].
pub(crate) const LAYOUT_VERSION: u32 = 1;

pub(crate) const CTRL_SERVERS: usize = HEADER_LEN;
pub(crate) const CTRL_CLIENTS: usize = HEADER_LEN + 8;
pub(crate) const CTRL_SERVERS_WAITING: usize = HEADER_LEN + 16;
pub(crate) const CTRL_REQUEST_SEQ: usize = HEADER_LEN + 24;
const CTRL_LEN: usize = 128;
const SERVER_TABLE: usize = HEADER_LEN + 128;
const SERVER_ENTRY: usize = 64;
const CLIENT_ENTRY: usize = 128;
use crate::shm::entry::ENTRY_OWNER;
const CLIENT_WAITING: usize = 16;
const CLIENT_WAKE: usize = 24;
const CLIENT_HEAD: usize = 64;
const CLIENT_LOCK_WORD: usize = 72;
/// `lock` value while the client itself holds its ring's claim lock (to cancel calls).
pub(crate) const CLIENT_LOCK: u64 = 1 << 32;
/// Bytes of call-slot header before the request, and of item header before a response.
pub const CALL_HEADER: usize = 32;
const CALL_STATE: usize = 0;
const CALL_ENDED: usize = 8;
const CLAIM_ENTRY: usize = 16;
const CLAIM_WORD: usize = 0;
const CLAIM_TAKER: usize = 8;
const CALL_LEN: usize = 16;
const CALL_CONSUMED: usize = 24;
const ITEM_STAMP: usize = 0;
const ITEM_CALL: usize = 8;
const ITEM_LEN: usize = 16;
const ITEM_FLAGS: usize = 24;

/// Largest in-flight limit per client (call slots).
pub const MAX_IN_FLIGHT: usize = 1024;
/// Largest number of clients or servers of one service.
pub const MAX_PARTICIPANTS: usize = 64;
/// Largest request or response size.
pub const MAX_SERVICE_MESSAGE: usize = 1 << 30;
/// Largest stream depth (response items per call slot).
pub const MAX_STREAM_DEPTH: usize = 64;

/// Call-slot kinds (low 2 bits of the state word).
pub(crate) const UNUSED: u64 = 0;
pub(crate) const POSTED: u64 = 1;
pub(crate) const TAKEN: u64 = 2;
pub(crate) const CANCELLED: u64 = 3;

/// Item flags.
pub(crate) const DATA: u64 = 1;
pub(crate) const END: u64 = 2;
pub(crate) const ABORTED: u64 = 4;

/// Bit of a slot's `consumed` word above the item count, written by the client:
/// the client gave up on the slot's current call: a streaming server stops at once.
pub(crate) const CONSUMED_ABANDONED: u64 = 1 << 62;
/// The item count part of a `consumed` word.
pub(crate) const CONSUMED_COUNT: u64 = (1 << 62) - 1;

/// Largest call position: positions live in the state word above 8 bits.
pub(crate) const MAX_POSITION: u64 = (1 << 56) - 1;

/// A call-slot state word.
#[inline]
pub(crate) fn call_state(pos: u64, server: usize, kind: u64) -> u64 {
    debug_assert!(pos <= MAX_POSITION && server < MAX_PARTICIPANTS && kind < 4);
    pos << 8 | (server as u64) << 2 | kind
}

/// Splits a state word into (position, server, kind). Any word decodes to values in range.
#[inline]
pub(crate) fn split_state(w: u64) -> (u64, usize, u64) {
    (w >> 8, ((w >> 2) & 63) as usize, w & 3)
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
            if !(1..=MAX_SERVICE_MESSAGE).contains(&n) {
                return Err(invalid(format!(
                    "max {what} size {n} must be in 1..={MAX_SERVICE_MESSAGE}"
                )));
            }
        }
        let req_stride = (CALL_HEADER + max_request).div_ceil(64) * 64;
        let item_stride = (CALL_HEADER + max_response).div_ceil(64) * 64;
        let client_table = SERVER_TABLE + SERVER_ENTRY * max_servers;
        let calls = (client_table + CLIENT_ENTRY * max_clients).div_ceil(128) * 128;
        let too_big = || invalid("service size overflows".into());
        let call_stride = item_stride
            .checked_mul(depth)
            .and_then(|i| i.checked_add(req_stride))
            .ok_or_else(too_big)?;
        let claims_len = (CLAIM_ENTRY * in_flight).div_ceil(64) * 64;
        let ring_len = call_stride
            .checked_mul(in_flight)
            .and_then(|r| r.checked_add(claims_len))
            .ok_or_else(too_big)?;
        let len = ring_len
            .checked_mul(max_clients)
            .and_then(|c| c.checked_add(calls))
            .filter(|l| *l <= isize::MAX as usize / 2)
            .ok_or_else(too_big)?;
        Ok(ServiceLayout {
            max_clients,
            max_servers,
            in_flight,
            max_request,
            max_response,
            depth,
            kinds,
            client_table,
            calls,
            req_stride,
            item_stride,
            call_stride,
            claims_len,
            ring_len,
            len,
        })
    }

    /// Configuration words; `types` is the response type's identity check word (see
    /// [`ServiceLayout::header`]).
    fn config_words(&self, response_ty: u64) -> [u64; CONFIG_WORDS] {
        let mut w = [0u64; CONFIG_WORDS];
        w[0] = self.max_clients as u64;
        w[1] = self.max_servers as u64;
        w[2] = self.in_flight as u64;
        w[3] = self.max_request as u64;
        w[4] = self.max_response as u64;
        w[5] = self.depth as u64;
        w[6] = self.config_kinds();
        w[7] = response_ty;
        w
    }

    /// Configuration word 6: request and response payload kinds.
    pub(crate) fn config_kinds(&self) -> u64 {
        kind_code(self.kinds.0) | kind_code(self.kinds.1) << 8
    }

    /// Rebuilds a layout from an (untrusted) header and checks it against the segment length.
    pub(crate) fn from_header(h: &Header, region_len: usize) -> Result<ServiceLayout, OpenError> {
        h.check_version(LAYOUT_VERSION)?;
        let c = &h.config;
        let small = |w: u64| usize::try_from(w).unwrap_or(usize::MAX);
        let (Some(req), Some(resp)) = (kind_of(c[6] & 0xff), kind_of(c[6] >> 8)) else {
            return Err(OpenError::Corrupt(format!(
                "unknown payload kinds {}",
                c[6]
            )));
        };
        let l = ServiceLayout::new(
            small(c[0]),
            small(c[1]),
            small(c[2]),
            small(c[3]),
            small(c[4]),
            small(c[5]),
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
    /// folded into configuration word 7 (a hash of its identity).
    pub(crate) fn header(&self, request: TypeIdentity, response_ty: u64) -> Header {
        Header {
            kind: KIND_SERVICE,
            version: LAYOUT_VERSION,
            segment_len: self.len as u64,
            ty: request,
            config: self.config_words(response_ty),
        }
    }

    pub(crate) fn server_entry(&self, s: usize) -> usize {
        debug_assert!(s < self.max_servers);
        SERVER_TABLE + SERVER_ENTRY * s
    }

    pub(crate) fn client_entry(&self, c: usize) -> usize {
        debug_assert!(c < self.max_clients);
        self.client_table + CLIENT_ENTRY * c
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
            ctrl: region.ptr(HEADER_LEN, CTRL_LEN),
            entry: region.ptr(self.client_entry(c), CLIENT_ENTRY),
            base: region.ptr(self.calls + ring_len * c, ring_len),
            slot_mask: self.in_flight - 1,
            item_mask: self.depth as u64 - 1,
        }
    }
}

/// A call slot's request-part words (see `CallRing::at`).
pub(crate) struct SlotRef<'a> {
    /// Start of the slot (64-aligned, inside a checked ring span; CALL_HEADER + max_request
    /// bytes follow it).
    base: *mut u8,
    _ring: std::marker::PhantomData<&'a CallRing>,
}

/// A response item's words (see `CallRing::item_ref`).
pub(crate) struct ItemRef<'a> {
    /// Start of the item (64-aligned, inside a checked ring span; CALL_HEADER + max_response
    /// bytes follow it).
    base: *mut u8,
    _ring: std::marker::PhantomData<&'a CallRing>,
}

/// The 8-aligned word at `base + off`, off < CALL_HEADER.
#[inline]
fn header_word<'a>(base: *mut u8, off: usize) -> &'a AtomicU64 {
    debug_assert!(off < CALL_HEADER && off % 8 == 0);
    // SAFETY: `base` starts a 64-aligned slot or item inside a ring span checked when its
    // `CallRing` was made (which outlives 'a); `off` is one of the named header offsets.
    unsafe { &*(base.add(off) as *const AtomicU64) }
}

impl<'a> SlotRef<'a> {
    #[inline]
    pub(crate) fn state(&self) -> &'a AtomicU64 {
        header_word(self.base, CALL_STATE)
    }
    #[inline]
    pub(crate) fn consumed(&self) -> &'a AtomicU64 {
        header_word(self.base, CALL_CONSUMED)
    }
    #[inline]
    pub(crate) fn len(&self) -> &'a AtomicU64 {
        header_word(self.base, CALL_LEN)
    }
    /// Position + 1 of the slot's last call whose END the client read (durable across a crash
    /// of the client, unlike anything it keeps in its own memory).
    #[inline]
    pub(crate) fn ended(&self) -> &'a AtomicU64 {
        header_word(self.base, CALL_ENDED)
    }
}

impl<'a> ItemRef<'a> {
    #[inline]
    pub(crate) fn stamp(&self) -> &'a AtomicU64 {
        header_word(self.base, ITEM_STAMP)
    }
    #[inline]
    pub(crate) fn call(&self) -> &'a AtomicU64 {
        header_word(self.base, ITEM_CALL)
    }
    #[inline]
    pub(crate) fn len(&self) -> &'a AtomicU64 {
        header_word(self.base, ITEM_LEN)
    }
    #[inline]
    pub(crate) fn flags(&self) -> &'a AtomicU64 {
        header_word(self.base, ITEM_FLAGS)
    }
    /// The payload area: max_response bytes, 32-aligned.
    #[inline]
    pub(crate) fn payload(&self) -> *mut u8 {
        // SAFETY: CALL_HEADER + max_response ≤ item_stride: inside the item.
        unsafe { self.base.add(CALL_HEADER) }
    }
}

/// Where a call slot's (current or last) call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Never used.
    Unused,
    /// Posted, no server has taken it.
    Posted { pos: u64 },
    /// Cancelled by its client before any server took it.
    Cancelled { pos: u64 },
    /// Taken by `server`, which may still write its responses.
    Taken { pos: u64, server: usize },
    /// Given up by its server: nothing more will be written for it.
    Released { pos: u64 },
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

/// One client's call ring inside a mapped service: typed access to its words.
///
/// Built with its two spans bounds-checked (the client entry and the ring's call slots); slot and
/// item indices are masked, so every access stays inside them whatever the caller passes. It
/// holds raw pointers into a mapped region: it must live beside (never outlive) the `Arc` that
/// keeps that region mapped, as in `ClientCore` and `ServerCore`.
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
    #[inline]
    pub(crate) fn mask(&self) -> u64 {
        self.slot_mask as u64
    }

    /// Byte offset of `slot` within the ring.
    #[inline]
    fn slot(&self, slot: usize) -> usize {
        self.claims_len + self.call_stride * (slot & self.slot_mask)
    }

    /// Byte offset of `slot`'s claim entry within the ring.
    #[inline]
    fn claim_entry(&self, slot: usize) -> usize {
        CLAIM_ENTRY * (slot & self.slot_mask)
    }

    /// Byte offset of item `n` of `slot` within the ring.
    #[inline]
    fn item(&self, slot: usize, n: u64) -> usize {
        self.slot(slot) + self.req_stride + self.item_stride * (n & self.item_mask) as usize
    }

    #[inline]
    fn word(&self, off: usize) -> &AtomicU64 {
        debug_assert!(
            off % 8 == 0 && off + 8 <= self.claims_len + self.call_stride * (self.slot_mask + 1)
        );
        // SAFETY: `off` is a claim, slot or item offset (index masked into the ring) plus a
        // header offset below its entry size, so it lies inside the ring span checked in `ring`;
        // it is
        // 8-aligned (strides are multiples of 64, the span starts 128-aligned in a page-aligned
        // region). AtomicU64 accepts any bits; the the region outlives the ring (see the type's docs).
        unsafe { &*(self.base.add(off) as *const AtomicU64) }
    }

    #[inline]
    fn entry_word(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off % 8 == 0 && off + 8 <= CLIENT_ENTRY);
        // SAFETY: `off` is one of the entry's named offsets (< CLIENT_ENTRY), inside the entry
        // span checked in `ring`, 8-aligned (entries are 128-aligned).
        unsafe { &*(self.entry.add(off) as *const AtomicU64) }
    }

    #[inline]
    pub(crate) fn head(&self) -> &AtomicU64 {
        self.entry_word(CLIENT_HEAD)
    }
    /// A word of the control block (offset `off` from `HEADER_LEN`).
    #[inline]
    fn ctrl_word(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off % 8 == 0 && off + 8 <= CTRL_LEN);
        // SAFETY: `off` is a named control offset inside the control span checked in `ring`,
        // 8-aligned (the block starts at HEADER_LEN = 256).
        unsafe { &*(self.ctrl.add(off) as *const AtomicU64) }
    }
    /// The control block's bitmap of registered servers.
    #[inline]
    pub(crate) fn servers(&self) -> &AtomicU64 {
        self.ctrl_word(CTRL_SERVERS - HEADER_LEN)
    }
    /// The control block's bitmap of registered clients.
    #[inline]
    pub(crate) fn clients(&self) -> &AtomicU64 {
        self.ctrl_word(CTRL_CLIENTS - HEADER_LEN)
    }
    /// The control block's bitmap of sleeping servers.
    #[inline]
    pub(crate) fn servers_waiting(&self) -> &AtomicU64 {
        self.ctrl_word(CTRL_SERVERS_WAITING - HEADER_LEN)
    }

    #[inline]
    pub(crate) fn lock(&self) -> &AtomicU64 {
        self.entry_word(CLIENT_LOCK_WORD)
    }
    #[inline]
    pub(crate) fn waiting(&self) -> &AtomicU64 {
        self.entry_word(CLIENT_WAITING)
    }
    #[inline]
    pub(crate) fn wake(&self) -> &AtomicU32 {
        // SAFETY: CLIENT_WAKE is a 4-aligned offset inside the checked entry span.
        unsafe { &*(self.entry.add(CLIENT_WAKE) as *const AtomicU32) }
    }
    #[inline]
    pub(crate) fn owner(&self) -> &AtomicU64 {
        self.entry_word(ENTRY_OWNER)
    }
    #[inline]
    pub(crate) fn state(&self, slot: usize) -> &AtomicU64 {
        self.word(self.slot(slot) + CALL_STATE)
    }
    /// The words of `slot`'s request part, its offset computed once.
    #[inline]
    pub(crate) fn at(&self, slot: usize) -> SlotRef<'_> {
        // SAFETY: the slot offset (index masked) lies inside the ring span checked in `ring`.
        SlotRef {
            base: unsafe { self.base.add(self.slot(slot)) },
            _ring: std::marker::PhantomData,
        }
    }

    /// The words of item `n` of `slot`, its offset computed once.
    #[inline]
    pub(crate) fn item_ref(&self, slot: usize, n: u64) -> ItemRef<'_> {
        // SAFETY: the item offset (indices masked) lies inside the ring span checked in `ring`.
        ItemRef {
            base: unsafe { self.base.add(self.item(slot, n)) },
            _ring: std::marker::PhantomData,
        }
    }

    /// The claim word of `slot` (servers write it under the claim lock).
    #[inline]
    pub(crate) fn claim(&self, slot: usize) -> &AtomicU64 {
        self.word(self.claim_entry(slot) + CLAIM_WORD)
    }
    #[inline]
    pub(crate) fn taker(&self, slot: usize) -> &AtomicU64 {
        self.word(self.claim_entry(slot) + CLAIM_TAKER)
    }

    /// Where `slot`'s call stands, from its state word (client) and claim word (servers).
    #[inline]
    pub(crate) fn status(&self, slot: usize) -> Status {
        // Acquire, both: pair with the Release stores of POSTED / CANCELLED (client) and with
        // the claim lock's Release (servers).
        let (pos, _, kind) = split_state(self.state(slot).load(Ordering::Acquire));
        let (cpos, server, ckind) = split_state(self.claim(slot).load(Ordering::Acquire));
        match kind {
            UNUSED => Status::Unused,
            _ if cpos == pos && ckind == TAKEN => Status::Taken { pos, server },
            _ if cpos == pos && ckind == CANCELLED => Status::Released { pos },
            POSTED => Status::Posted { pos },
            _ => Status::Cancelled { pos },
        }
    }
    #[inline]
    pub(crate) fn consumed(&self, slot: usize) -> &AtomicU64 {
        self.word(self.slot(slot) + CALL_CONSUMED)
    }
    /// The request area of `slot`: `max_request_size` bytes, 32-aligned.
    #[inline]
    pub(crate) fn request(&self, slot: usize) -> *mut u8 {
        // SAFETY: the slot's request area lies inside the ring span checked in `ring` (slot
        // masked; CALL_HEADER + max_request ≤ req_stride ≤ call_stride).
        unsafe { self.base.add(self.slot(slot) + CALL_HEADER) }
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
    }

    #[test]
    fn state_words_round_trip() {
        let w = call_state(MAX_POSITION, 63, CANCELLED);
        assert_eq!(split_state(w), (MAX_POSITION, 63, CANCELLED));
        assert_eq!(split_state(call_state(5, 2, TAKEN)), (5, 2, TAKEN));
    }
}
