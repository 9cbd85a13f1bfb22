//! The call ring of one client: the call-slot protocol between a client and the servers of a
//! service.
//!
//! A client owns `F` call slots (a power of two) and uses them in turn: the call at position `p`
//! lives in slot `p % F`. Each slot has a request part, written by the client, and `K` response
//! items (a power of two), written by the server that took the call: item number `n` lives in
//! item slot `n % K`. Any number of servers (up to 64) take calls from the ring; each call goes to
//! at most one of them.
//!
//! # Cells
//! - `state[i]`: `p << 8 | kind`, kind one of [`UNUSED`], [`POSTED`], [`CANCELLED`]. Written by the
//!   ring's client (and, for a dead client, by whoever reclaims it, under the claim lock).
//! - `len[i]` (request length), `consumed[i]` (items of slot `i` read, ever, modulo 2^62, plus the
//!   [`CONSUMED_ABANDONED`] bit), `ended[i]` (`p + 1` of the last call of slot `i` whose END was
//!   read): written by the client.
//! - `claim[i]`: `p << 8 | s << 2 | kind`: [`TAKEN`] by server `s`, [`CANCELLED`] (*released*:
//!   its server gave the call up and writes nothing more for it) or [`UNUSED`] (*given back*: the
//!   call is posted again). `taker[i]`: the owner word of the server that took it. Written by
//!   servers: under the claim lock (take, give back) or by the taker alone (release).
//! - `head`: no server has looked at a position from `head` on. Moved under the claim lock.
//! - `lock`: the ring's claim lock: 0 free, `s + 1` held by server `s`, [`CLIENT_LOCK`] by the
//!   client.
//! - item `n` of slot `i`: `stamp` (`n + 1` once published), `call` (the position it answers),
//!   `len`, `flags` ([`DATA`], [`END`], [`ABORTED`]), and the payload bytes (outside the cells).
//!
//! A call's *status* is read from `state[i]` and `claim[i]` together ([`status`]): a claim word
//! counts only if it names the position in the state word.
//!
//! # Transitions
//! | who | step | words |
//! |---|---|---|
//! | client | post `p` ([`Caller::post`]) | request bytes, `len`, `consumed`; then `state = POSTED(p)` |
//! | client | give a reserved `p` up unsent ([`Caller::unpost`]) | `state = CANCELLED(p)` |
//! | client | cancel `p` (drop, timeout, no server) | under the lock: if `POSTED(p)` and not taken, `state = CANCELLED(p)` |
//! | server | take ([`ServerLock::take`]) | under the lock: `taker`, `claim = TAKEN(p, s)` for `p = head, head + 1, ..` still posted; `head` past them |
//! | server | give back ([`ServerLock::give_back`]) | under the lock: `claim = UNUSED(p)`, `head = min(head, p)` |
//! | server | respond / stream item `n` ([`Call::commit`]) | after room: payload, `call`, `len`, `flags`, then `stamp = n + 1` |
//! | server | release ([`Call::release`]) | `claim: TAKEN(p, s) -> CANCELLED(p, s)` |
//! | client | read item `n` ([`Caller::poll`], [`Caller::consume`]) | `stamp == n + 1` and `call == p`; after reading, `ended` (if END), then `consumed = n + 1` |
//! | client | abandon `p` ([`Caller::finish`]) | `consumed |= ABANDONED`; later items are discarded |
//! | reclaim | of a dead server ([`release_lock_of_dead`]) | `lock: s + 1 -> 0` |
//! | reclaim | of a dead client ([`ClientLock::cancel_all_posted`]) | under the lock: every `POSTED` call `CANCELLED` |
//!
//! # Invariants
//! 1. **One taker, never after a cancel.** A posted call becomes taken only under the claim lock,
//!    by a server that reads its status under the lock; the client cancels a posted call only
//!    under the same lock, after reading its status under it. So a call is taken by at most one
//!    server, and never both taken and cancelled.
//! 2. **The request part belongs to one side at a time.** The client writes a slot's request
//!    bytes, `len` and `consumed` only while the slot holds no call a server may read (before
//!    storing `POSTED(p)`); a server reads them only after taking the call. The client reuses a
//!    slot ([`Phase::Free`]) only once the call is over: (a) it cancelled the call (1: no server
//!    has it), (b) it read the call's END item (its server writes nothing for the call after END),
//!    (c) it saw the call released (stored by the server after its last access), or (d) the server
//!    that took it is dead (judged by the caller's [`Env::taker_alive`]). A server that gives a
//!    call back read only `len` and `consumed` and touches it no more.
//! 3. **Items.** The server of a call writes item `n` only when the client has consumed item
//!    `n - K` (`consumed > n - K`, loaded with Acquire), or `n` is the call's first item (every
//!    earlier item of the slot was consumed before the call was posted, 2); it publishes it with
//!    `stamp = n + 1` after its payload and words. The client reads item `n` only after loading
//!    `stamp == n + 1` and `call == p`, and stores `consumed = n + 1` after its last read of it.
//!    An item of an earlier call (`call != p`, left by a crash) is skipped.
//! 4. **Positions.** The client posts dense, increasing positions (a reserved position it does
//!    not send is stored CANCELLED); servers take them in order from `head`. A server at `head = h`
//!    whose slot holds a position below `h` stops (`h` is not posted yet), `h` itself no longer
//!    posted (cancelled, taken, released) moves on, a position above `h` (the slot was reused)
//!    jumps to the lowest position still in the ring. Every walk is bounded by `F` steps.
//! 5. **Abandon.** A client that gives up on a taken call (a timeout, a dropped pending call)
//!    keeps its slot ([`Phase::Abandoned`]) and sets [`CONSUMED_ABANDONED`]: a streaming server
//!    stops ([`Room::Abandoned`]) and releases the call. The client discards the call's items
//!    until 2 frees the slot.
//! 6. **Adoption.** `ended[i]` records in shared memory which calls are over, so a client that
//!    takes over a dead client's entry ([`Caller::adopt`]) continues after the highest position
//!    posted, treats every used slot as abandoned, and frees those 2 allows.
//! 7. **Locks and reclaim.** The claim lock is released by its holder, or, for a dead server, by
//!    whoever reclaims its entry (under the segment lock, so no new server reuses the index
//!    meanwhile, [`release_lock_of_dead`]). The calls a dead server took stay TAKEN: their client
//!    finds the taker dead (2d). A dead client's posted calls are cancelled under the claim lock by
//!    the reclaimer; calls a server holds are left to their END, which the next owner of the entry
//!    reads (6). A [`CLIENT_LOCK`] the client finds while it holds no lock itself is a dead earlier
//!    owner's: it is taken over.
//!
//! # Memory ordering
//! - `POSTED(p)` is stored with Release after the request bytes, `len` and `consumed`; servers
//!   load the state with Acquire ([`status`]) before reading them (2).
//! - The claim lock is taken with an Acquire compare-and-swap and released with a Release store:
//!   whatever one holder wrote under it (`head`, claims, `CANCELLED`) is visible to the next. This
//!   is what makes a cancel and a take exclusive (1): whichever holds the lock second sees what
//!   the first did. The claim and `CANCELLED` stores are also Release themselves, for readers that
//!   do not take the lock (a client's [`status`], a server's look before locking).
//! - `taker` is stored (Relaxed) before the claim (Release): a client that sees the claim sees
//!   the taker.
//! - An item's `stamp` is stored with Release after its payload and words, and loaded with
//!   Acquire by the client (3). Since the server's reads of the request happen before its END's
//!   stamp store, a client that read the END may rewrite the request (2b).
//! - `consumed` is stored with Release after the client's reads of the item, and loaded with
//!   Acquire by the server before it overwrites the item (3).
//! - A release is a Release compare-and-swap: the server's last reads of the request and its items
//!   happen before a client that loaded the released claim (Acquire, [`status`]) reuses the slot
//!   (2c).
//! - `ended` is stored (Relaxed) before `consumed` (Release); an adopting client reads both after
//!   taking the entry under the segment lock, which orders it after everything its dead owner did.
//!
//! # What loom cannot model
//! The models below (`loom_tests`) run the protocol over `model::VecCells` with threads for a
//! client and its servers. Three things are outside them, and argued instead:
//! - **Process death and liveness.** Invariant 2d rests on [`Env::taker_alive`], which the
//!   service answers from `/proc` (pid and start time): a process found dead runs no more code,
//!   so it stores nothing after. Models stand a dead server in by a thread that stops.
//! - **The sleep handshakes** (a client asleep for a response, servers asleep for a call) are not
//!   in this file: the service pairs a publish here (`POSTED`, an item's stamp) with a ring of a
//!   `sync::Doorbell`, whose sleeper sets its bit and rechecks across an asymmetric barrier (a
//!   compiler fence on the ringing side, `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` on the
//!   sleeping side). Loom has no `membarrier`; it is at least as strong as a `fence(SeqCst)` on
//!   both sides (it makes every running thread pass a full barrier before it returns, and a thread
//!   not running is between context switches, which are full barriers), so the handshake is the
//!   store-buffer pattern closed by two SeqCst fences, which the doorbell's own loom model checks
//!   with fences in place of the barriers. The handshake only decides whether a sleeper is woken;
//!   every sleep is bounded by a timeout after which the waiter rechecks, so a missed wake costs
//!   time, never a wrong answer.
//! - **The claim lock's waiting policy** (how long to spin, when to look for a dead holder) is the
//!   caller's ([`Env::lock_busy`]); models yield.

use std::cell::Cell;

use crate::loom::atomic::{AtomicU64, Ordering};

crate::numbered! { u64:
    /// Call kind (state and claim words): nothing posted (state) / given back (claim).
    pub UNUSED,
    /// Call kind (state word): posted by the client.
    pub POSTED,
    /// Call kind (claim word): taken by the server named in the word.
    pub TAKEN,
    /// Call kind: cancelled by the client (state word), released by its server (claim word).
    pub CANCELLED,
}

/// Item flag: the item carries a response.
pub const DATA: u64 = 1;
/// Item flag: the call's last item.
pub const END: u64 = 2;
/// Item flag: the server gave the call up (with END: the caller is told `Aborted`, or the
/// failure its code names).
pub const ABORTED: u64 = 4;
/// Where an ABORTED item's failure code sits in its flags (8 bits): 0 aborted, then
/// [`FAIL_TIMEOUT`], [`FAIL_NO_SERVER`], [`FAIL_DISCONNECTED`] (what a bridge relays from a
/// server on another host); an unknown code reads as 0.
pub const FAIL_SHIFT: u32 = 8;
/// Failure code: the call timed out further on (a remote server's host).
pub const FAIL_TIMEOUT: u64 = 1;
/// Failure code: no server serves the service further on.
pub const FAIL_NO_SERVER: u64 = 2;
/// Failure code: the server further on (or the link to it) died during the call.
pub const FAIL_DISCONNECTED: u64 = 3;

/// Bit of a slot's `consumed` word: the client gave up on the slot's current call.
pub const CONSUMED_ABANDONED: u64 = 1 << 62;
/// The item count part of a `consumed` word (counts wrap modulo 2^62).
pub const CONSUMED_COUNT: u64 = (1 << 62) - 1;

/// Largest call position: positions live in the state and claim words above 8 bits.
pub const MAX_POSITION: u64 = (1 << 56) - 1;
/// Most servers of one service (6 bits of a claim word; lock values 1 to 64).
pub const MAX_SERVERS: usize = 64;
/// `lock` value while the client itself holds its ring's claim lock.
pub const CLIENT_LOCK: u64 = 1 << 32;

/// A state or claim word.
#[inline]
pub fn call_state(pos: u64, server: usize, kind: u64) -> u64 {
    debug_assert!(pos <= MAX_POSITION && server < MAX_SERVERS && kind < 4);
    (pos << 8) | ((server as u64) << 2) | kind
}

/// Splits a state or claim word into (position, server, kind). Any word decodes to values in
/// range.
#[inline]
pub fn split_state(w: u64) -> (u64, usize, u64) {
    (w >> 8, ((w >> 2) & 63) as usize, w & 3)
}

/// The atomic cells of one client's call ring, wherever they live. Implementations mask `slot`
/// by `F - 1` and `n` by `K - 1`, so any index stays inside the ring.
pub trait Cells {
    /// `F - 1`, where `F` (the call slots) is a power of two.
    fn slot_mask(&self) -> u64;
    /// `K - 1`, where `K` (the response items per slot) is a power of two.
    fn item_mask(&self) -> u64;
    /// The lowest position no server has looked at.
    fn head(&self) -> &AtomicU64;
    /// The claim lock.
    fn lock(&self) -> &AtomicU64;
    /// Claim word of `slot`.
    fn claim(&self, slot: usize) -> &AtomicU64;
    /// Owner word of the server that took `slot`'s call.
    fn taker(&self, slot: usize) -> &AtomicU64;
    /// State word of `slot`.
    fn state(&self, slot: usize) -> &AtomicU64;
    /// `p + 1` of the last call of `slot` whose END the client read.
    fn ended(&self, slot: usize) -> &AtomicU64;
    /// Request length of `slot`.
    fn len(&self, slot: usize) -> &AtomicU64;
    /// Items of `slot` consumed, and the ABANDONED bit.
    fn consumed(&self, slot: usize) -> &AtomicU64;
    /// Stamp of item `n` of `slot`.
    fn stamp(&self, slot: usize, n: u64) -> &AtomicU64;
    /// Position answered by item `n` of `slot`.
    fn item_call(&self, slot: usize, n: u64) -> &AtomicU64;
    /// Payload length of item `n` of `slot`.
    fn item_len(&self, slot: usize, n: u64) -> &AtomicU64;
    /// Flags of item `n` of `slot`.
    fn item_flags(&self, slot: usize, n: u64) -> &AtomicU64;
}

/// Where a call slot's (current or last) call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Never used.
    Unused,
    /// Posted, no server has taken it.
    Posted {
        /// Its position.
        pos: u64,
    },
    /// Cancelled by its client before any server took it.
    Cancelled {
        /// Its position.
        pos: u64,
    },
    /// Taken by `server`, which may still write its responses.
    Taken {
        /// Its position.
        pos: u64,
        /// The server that took it.
        server: usize,
    },
    /// Released by its server: nothing more will be written for it.
    Released {
        /// Its position.
        pos: u64,
    },
}

/// Where `slot`'s call stands, from its state word (client) and claim word (servers).
#[inline]
pub fn status(c: &impl Cells, slot: usize) -> Status {
    // Acquire, both: pair with the Release stores of POSTED / CANCELLED (client) and of the
    // claim (servers), so what was written before them is visible.
    let (pos, _, kind) = split_state(c.state(slot).load(Ordering::Acquire));
    let (cpos, server, ckind) = split_state(c.claim(slot).load(Ordering::Acquire));
    match kind {
        UNUSED => Status::Unused,
        _ if cpos == pos && ckind == TAKEN => Status::Taken { pos, server },
        _ if cpos == pos && ckind == CANCELLED => Status::Released { pos },
        POSTED => Status::Posted { pos },
        _ => Status::Cancelled { pos },
    }
}

/// Who holds a claim lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// Server `s`.
    Server(usize),
    /// The ring's client.
    Client,
    /// A value no participant stores: a corrupt segment.
    Garbage(u64),
}

impl Holder {
    fn of(v: u64) -> Holder {
        match v {
            CLIENT_LOCK => Holder::Client,
            1..=64 => Holder::Server(v as usize - 1),
            _ => Holder::Garbage(v),
        }
    }
}

/// What the protocol asks of its environment: how to wait for a busy claim lock, and whether a
/// server is alive (see "What loom cannot model").
pub trait Env {
    /// The claim lock was found held by `holder` (never [`Holder::Client`]: the client takes its
    /// own stale lock over) on the `attempt`-th try of one acquisition (from 0). Wait a moment or
    /// clean up after a dead holder, and answer whether to try again.
    fn lock_busy(&mut self, holder: Holder, attempt: u32) -> bool;
    /// Whether server `server`, which took a call with owner word `taker` (0 if unknown), is
    /// still alive.
    fn taker_alive(&mut self, server: usize, taker: u64) -> bool;
}

/// The claim lock of a ring, held by its client (to cancel posted calls). Released on drop.
pub struct ClientLock<'c, C: Cells> {
    c: &'c C,
}

impl<'c, C: Cells> ClientLock<'c, C> {
    /// Takes `c`'s claim lock as its client, asking `busy` (see [`Env::lock_busy`]) while another
    /// holds it. Must not be called while this client holds the lock (invariant 7: a
    /// [`CLIENT_LOCK`] found then is a dead earlier owner's, taken over).
    pub fn acquire(c: &'c C, mut busy: impl FnMut(Holder, u32) -> bool) -> Option<Self> {
        let mut attempt = 0u32;
        loop {
            // Acquire: pairs with the holder's Release, so its head, claims and states are
            // visible (invariant 1).
            match c
                .lock()
                .compare_exchange(0, CLIENT_LOCK, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) | Err(CLIENT_LOCK) => return Some(ClientLock { c }),
                Err(v) => {
                    if !busy(Holder::of(v), attempt) {
                        return None;
                    }
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// Cancels the call in `slot` if no server has taken it; returns whether the slot holds no
    /// live call afterwards (cancelled now or before, released, or never used).
    pub fn cancel(&self, slot: usize) -> bool {
        match status(self.c, slot) {
            Status::Posted { pos } => {
                // Release: servers that see CANCELLED (with or without the lock) skip the call.
                self.c
                    .state(slot)
                    .store(call_state(pos, 0, CANCELLED), Ordering::Release);
                true
            }
            Status::Taken { .. } => false,
            _ => true,
        }
    }

    /// Cancels every posted call no server has taken (reclaiming a dead client).
    pub fn cancel_all_posted(&self) {
        for slot in 0..=self.c.slot_mask() as usize {
            self.cancel(slot);
        }
    }
}

impl<C: Cells> Drop for ClientLock<'_, C> {
    fn drop(&mut self) {
        // Release: our stores under the lock are visible to the next holder. A CAS: a reclaimer
        // never takes a live client's lock, but a corrupt word must not be overwritten blindly.
        let _ =
            self.c
                .lock()
                .compare_exchange(CLIENT_LOCK, 0, Ordering::Release, Ordering::Relaxed);
    }
}

/// Who holds `c`'s claim lock now, if anyone. A hint, for deciding whether to look for a dead
/// holder.
pub fn lock_holder(c: &impl Cells) -> Option<Holder> {
    // Relaxed: a hint; acting on it (a reclaim) runs under the segment lock.
    match c.lock().load(Ordering::Relaxed) {
        0 => None,
        v => Some(Holder::of(v)),
    }
}

/// Releases the claim lock of `c` if dead server `server` holds it. Only for whoever reclaims
/// that server's entry, under the segment lock (invariant 7).
pub fn release_lock_of_dead(c: &impl Cells, server: usize) {
    // AcqRel: as a lock release (its stores were the dead holder's; ours are none), and Acquire
    // so the reclaimer sees what the holder left. Only under the segment lock, so entry `server`
    // cannot have a new owner holding the same lock value yet.
    let _ = c
        .lock()
        .compare_exchange(server as u64 + 1, 0, Ordering::AcqRel, Ordering::Relaxed);
}

// ------------------------------------------------------------------------------------------------
// The client
// ------------------------------------------------------------------------------------------------

/// Where a slot stands for its client.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Phase {
    /// No call: the slot may take the next one.
    Free,
    /// A call the user holds (a loan, a pending call or a response).
    Active {
        /// Its last response has been read.
        ended: bool,
    },
    /// A call given up on (timeout, dropped) that a server may still hold: its responses are
    /// discarded until it is over (invariant 2), then the slot is free.
    Abandoned,
}

/// A slot's client-side state, alone on its 64-byte line (threads of one process calling through
/// different clients never share a line they write).
#[repr(align(64))]
struct SlotCell {
    phase: Cell<Phase>,
    /// Position of the slot's current (or last) call.
    pos: Cell<u64>,
    /// Response items consumed from this slot, ever (mirrors the shared `consumed` count).
    consumed: Cell<u64>,
}

/// A response item found by [`Caller::poll`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    /// Its item number (where its payload is: item slot `n % K`).
    pub n: u64,
    /// Its payload length, as the server wrote it (unchecked).
    pub len: u64,
    /// Its flags.
    pub flags: u64,
}

/// A watch on the next stamp a slot expects: as cheap to poll as one atomic load.
pub struct Watch<'c> {
    word: &'c AtomicU64,
    want: u64,
}

impl Watch<'_> {
    /// Whether the awaited word has arrived. A hint: the caller then polls properly.
    #[inline(always)]
    pub fn ready(&self) -> bool {
        // Acquire: as the proper poll (which loads it again).
        self.word.load(Ordering::Acquire) == self.want
    }
}

/// What [`Caller::check`] found for a waiting call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Posted, not taken yet.
    Posted,
    /// Taken by a live server.
    Taken,
    /// Taken by a server that is gone: what it published is drained, the slot is free.
    TakerGone,
    /// Released by its server (or the slot was rewritten): drained, the slot is free.
    Over,
}

/// The client's private state of its ring: its slots' phases, positions and consumed counts.
/// One per ring, used by one thread at a time (it is not `Sync`).
pub struct Caller {
    mask: u64,
    depth: u64,
    next: Cell<u64>,
    loaned: Cell<bool>,
    slots: Box<[SlotCell]>,
}

impl Caller {
    /// Takes a ring over as its previous client (if any) left it: positions continue after the
    /// highest one posted; every used slot is [`Phase::Abandoned`] (the caller then frees what it
    /// can with [`Caller::collect`]). Invariant 6.
    pub fn adopt(c: &impl Cells) -> Caller {
        let f = c.slot_mask() as usize + 1;
        let mut next = 0u64;
        let mut slots = Vec::with_capacity(f);
        for slot in 0..f {
            // Acquire: pairs with the Release stores of the earlier owner.
            let (pos, _, kind) = split_state(c.state(slot).load(Ordering::Acquire));
            if kind != UNUSED {
                next = next.max(pos.saturating_add(1).min(MAX_POSITION));
            }
            // Relaxed: written by this ring's earlier owner, ordered by the entry's lock.
            let consumed = c.consumed(slot).load(Ordering::Relaxed) & CONSUMED_COUNT;
            let phase = if kind == UNUSED {
                Phase::Free
            } else {
                Phase::Abandoned
            };
            slots.push(SlotCell {
                phase: Cell::new(phase),
                pos: Cell::new(pos),
                consumed: Cell::new(consumed),
            });
        }
        Caller {
            mask: f as u64 - 1,
            depth: c.item_mask() + 1,
            next: Cell::new(next),
            loaned: Cell::new(false),
            slots: slots.into_boxed_slice(),
        }
    }

    #[inline(always)]
    fn cell(&self, slot: usize) -> &SlotCell {
        &self.slots[slot & self.mask as usize]
    }

    /// The phase of `slot`.
    #[inline]
    pub fn phase(&self, slot: usize) -> Phase {
        self.cell(slot).phase.get()
    }

    /// Slots not free.
    pub fn in_flight(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.phase.get() != Phase::Free)
            .count()
    }

    /// Whether a reserved position is not posted yet (later calls must wait: invariant 4).
    #[inline]
    pub fn loaned(&self) -> bool {
        self.loaned.get()
    }

    /// Slot and position of the next call. The position may exceed [`MAX_POSITION`] (the ring is
    /// used up).
    #[inline]
    pub fn next(&self) -> (usize, u64) {
        let pos = self.next.get();
        ((pos & self.mask) as usize, pos)
    }

    /// Reserves the next call, which [`Caller::next`] named and whose slot is free: the caller
    /// writes the request, then [`Caller::post`]s or [`Caller::unpost`]s it.
    #[inline]
    pub fn reserve(&self, slot: usize, pos: u64) {
        debug_assert!(self.next() == (slot, pos) && pos <= MAX_POSITION);
        debug_assert_eq!(self.phase(slot), Phase::Free);
        self.next.set(pos + 1);
        self.loaned.set(true);
        let cell = self.cell(slot);
        cell.phase.set(Phase::Active { ended: false });
        cell.pos.set(pos);
    }

    /// Posts the reserved call `pos` in `slot`, whose request (`len` bytes) is written.
    #[inline]
    pub fn post(&self, c: &impl Cells, slot: usize, pos: u64, len: u64) {
        self.loaned.set(false);
        // Relaxed: published by the Release store of POSTED below. `consumed` loses the previous
        // call's ABANDONED bit.
        c.len(slot).store(len, Ordering::Relaxed);
        c.consumed(slot)
            .store(self.cell(slot).consumed.get(), Ordering::Relaxed);
        // Release: the request, `len` and `consumed` are visible to a server that sees POSTED
        // (invariant 2).
        c.state(slot)
            .store(call_state(pos, 0, POSTED), Ordering::Release);
    }

    /// Gives the reserved call `pos` in `slot` up unsent: servers pass over its position
    /// (invariant 4).
    pub fn unpost(&self, c: &impl Cells, slot: usize, pos: u64) {
        self.loaned.set(false);
        // Release: servers that see the CANCELLED word move past the position.
        c.state(slot)
            .store(call_state(pos, 0, CANCELLED), Ordering::Release);
        self.cell(slot).phase.set(Phase::Free);
    }

    /// A watch on the stamp of the next item `slot` expects.
    #[inline]
    pub fn watch<'c>(&self, c: &'c impl Cells, slot: usize) -> Watch<'c> {
        let n = self.cell(slot).consumed.get();
        Watch {
            word: c.stamp(slot, n),
            want: n.wrapping_add(1),
        }
    }

    /// The next published item of `slot`'s call, if any. Items of earlier calls (left by a
    /// crash) are skipped (invariant 3). The item stays unwritten until it is consumed.
    #[inline]
    pub fn poll(&self, c: &impl Cells, slot: usize) -> Option<Item> {
        let cell = self.cell(slot);
        let pos = cell.pos.get();
        let mut n = cell.consumed.get();
        for _ in 0..=self.depth {
            // Acquire: pairs with the server's Release stamp store; the item's words and payload
            // are complete (invariant 3).
            let stamp = c.stamp(slot, n).load(Ordering::Acquire);
            if stamp != n.wrapping_add(1) {
                return None;
            }
            // Relaxed: ordered by the stamp's Acquire.
            let call = c.item_call(slot, n).load(Ordering::Relaxed);
            let len = c.item_len(slot, n).load(Ordering::Relaxed);
            let flags = c.item_flags(slot, n).load(Ordering::Relaxed);
            if call != pos {
                // A stale item (an earlier call of this slot, left by a crash): skip it.
                n = n.wrapping_add(1) & CONSUMED_COUNT;
                cell.consumed.set(n);
                self.store_consumed(c, slot, false);
                continue;
            }
            return Some(Item { n, len, flags });
        }
        None
    }

    /// Marks the item at the head of `slot` read (`last`: it ended the call). The caller's reads
    /// of it must be done: the server may overwrite it from now on.
    #[inline]
    pub fn consume(&self, c: &impl Cells, slot: usize, last: bool) {
        let cell = self.cell(slot);
        cell.consumed
            .set(cell.consumed.get().wrapping_add(1) & CONSUMED_COUNT);
        if last {
            if let Phase::Active { .. } = cell.phase.get() {
                cell.phase.set(Phase::Active { ended: true });
            }
        }
        self.store_consumed(c, slot, last);
    }

    /// Publishes `slot`'s consumed count, with ABANDONED while the call is abandoned; `ended`:
    /// the item read ended the call (recorded in the slot's `ended` word first).
    #[inline]
    fn store_consumed(&self, c: &impl Cells, slot: usize, ended: bool) {
        let cell = self.cell(slot);
        if ended {
            // Relaxed: published with `consumed` below (Release); an adopting client reads both
            // after the entry's lock.
            c.ended(slot)
                .store(cell.pos.get().wrapping_add(1), Ordering::Relaxed);
        }
        let mut w = cell.consumed.get();
        if cell.phase.get() == Phase::Abandoned {
            w |= CONSUMED_ABANDONED;
        }
        // Release: our reads of the consumed items happen before the server overwrites them
        // (invariant 3).
        c.consumed(slot).store(w, Ordering::Release);
    }

    /// Whether `slot` still holds the caller's call at `pos` (not failed, freed or reused).
    #[inline]
    pub fn is_current(&self, slot: usize, pos: u64) -> bool {
        let cell = self.cell(slot);
        cell.pos.get() == pos && matches!(cell.phase.get(), Phase::Active { .. })
    }

    /// Whether the last response of `slot`'s current call has been read.
    #[inline]
    pub fn ended(&self, slot: usize) -> bool {
        self.phase(slot) == Phase::Active { ended: true }
    }

    /// The user is done with `slot`'s call: frees the slot if the call ended or can be cancelled,
    /// else abandons it to its server (invariant 5). Returns the items discarded meanwhile.
    pub fn finish(&self, c: &impl Cells, slot: usize, env: &mut impl Env) -> u64 {
        match self.phase(slot) {
            Phase::Free | Phase::Abandoned => 0,
            Phase::Active { ended: true } => {
                self.cell(slot).phase.set(Phase::Free);
                0
            }
            Phase::Active { ended: false } => {
                if self.try_cancel(c, slot, env) {
                    self.cell(slot).phase.set(Phase::Free);
                    0
                } else {
                    self.cell(slot).phase.set(Phase::Abandoned);
                    // Tell a streaming server to stop rather than wait for room.
                    self.store_consumed(c, slot, false);
                    self.collect(c, slot, false, env)
                }
            }
        }
    }

    /// Cancels `slot`'s call under the claim lock if no server took it; frees the slot if it
    /// holds no live call afterwards (invariants 1, 2a). False if the lock could not be had.
    pub fn cancel(&self, c: &impl Cells, slot: usize, env: &mut impl Env) -> bool {
        let done = self.try_cancel(c, slot, env);
        if done {
            self.cell(slot).phase.set(Phase::Free);
        }
        done
    }

    fn try_cancel(&self, c: &impl Cells, slot: usize, env: &mut impl Env) -> bool {
        match ClientLock::acquire(c, |h, a| env.lock_busy(h, a)) {
            Some(lock) => lock.cancel(slot),
            None => false,
        }
    }

    /// For an abandoned slot: discards the items that arrived; frees the slot once the call is
    /// over (invariant 2: END read, cancelled, released, or, with `judge`, its taker dead).
    /// Returns the items discarded.
    pub fn collect(&self, c: &impl Cells, slot: usize, judge: bool, env: &mut impl Env) -> u64 {
        if self.phase(slot) != Phase::Abandoned {
            return 0;
        }
        let mut discarded = 0;
        while let Some(item) = self.poll(c, slot) {
            let end = item.flags & END != 0;
            self.consume(c, slot, end);
            discarded += 1;
            if end {
                self.cell(slot).phase.set(Phase::Free);
                return discarded;
            }
        }
        let pos = self.cell(slot).pos.get();
        if self.ended_before(c, slot)
            || self.try_cancel(c, slot, env)
            || (judge && self.taker_gone(c, slot, pos, env))
        {
            self.drain(c, slot);
            self.cell(slot).phase.set(Phase::Free);
        }
        discarded
    }

    /// For a call the user waits on: whether someone can still answer it. A call that is over
    /// (its taker gone, released) has its slot drained and freed.
    pub fn check(&self, c: &impl Cells, slot: usize, env: &mut impl Env) -> Check {
        let pos = self.cell(slot).pos.get();
        let check = match status(c, slot) {
            Status::Posted { pos: p } if p == pos => return Check::Posted,
            Status::Taken { pos: p, .. } if p == pos => {
                if !self.taker_gone(c, slot, pos, env) {
                    return Check::Taken;
                }
                Check::TakerGone
            }
            // Released by its server or rewritten: nothing more will come.
            _ => Check::Over,
        };
        self.drain(c, slot);
        self.cell(slot).phase.set(Phase::Free);
        check
    }

    /// Whether the END of `slot`'s current call was read (by this client or by a crashed earlier
    /// owner of the ring): the slot's `ended` word names the call (invariant 6).
    fn ended_before(&self, c: &impl Cells, slot: usize) -> bool {
        // Relaxed: written by this ring's (earlier) client; ordered by the entry's lock or by
        // program order.
        c.ended(slot).load(Ordering::Relaxed) == self.cell(slot).pos.get().wrapping_add(1)
    }

    /// Whether the server that took `slot`'s call (at `pos`) is gone, or the slot holds no call
    /// at `pos` any more.
    fn taker_gone(&self, c: &impl Cells, slot: usize, pos: u64, env: &mut impl Env) -> bool {
        match status(c, slot) {
            Status::Taken { pos: p, server } if p == pos => {
                // Relaxed: stored before the claim, whose Release our Acquire in `status` saw.
                let taker = c.taker(slot).load(Ordering::Relaxed);
                !env.taker_alive(server, taker)
            }
            Status::Posted { pos: p } => p != pos,
            // Cancelled, released, or the slot holds another call: nothing more will come.
            _ => true,
        }
    }

    /// Consumes what a gone server published for `slot`'s call (it publishes nothing more).
    fn drain(&self, c: &impl Cells, slot: usize) {
        while let Some(item) = self.poll(c, slot) {
            self.consume(c, slot, item.flags & END != 0);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The servers
// ------------------------------------------------------------------------------------------------

/// Whether a posted call may wait at `c`'s head: a look without the lock, so idle polling writes
/// nothing. A hint: [`ServerLock::take`] decides.
#[inline]
pub fn worth_taking(c: &impl Cells) -> bool {
    // Acquire: the head is moved under the lock; a stale value only means a spare look.
    let h = c.head().load(Ordering::Acquire);
    // Acquire: pairs with the client's Release store of POSTED.
    let (p, _, kind) = split_state(
        c.state((h & c.slot_mask()) as usize)
            .load(Ordering::Acquire),
    );
    !(p < h || (p == h && kind == UNUSED))
}

/// A watch on the state word where `c`'s next call will be posted (`head`'s slot).
#[inline]
pub fn watch_head(c: &impl Cells) -> Watch<'_> {
    // Relaxed: a hint of where to look.
    let h = c.head().load(Ordering::Relaxed);
    Watch {
        word: c.state((h & c.slot_mask()) as usize),
        // Built by hand: `h` comes from shared memory and may exceed what `call_state` accepts.
        want: (h << 8) | POSTED,
    }
}

/// A call taken by a server: what it needs to answer it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// Its slot.
    pub slot: usize,
    /// Its position.
    pub pos: u64,
    /// The request's length, as the client wrote it (unchecked).
    pub len: u64,
    /// The next item number to write.
    next: u64,
    /// The call's first item number (`consumed` when it was taken): always has room.
    first: u64,
}

/// Whether an item may be written now ([`Call::room`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Room {
    /// Yes.
    Ready,
    /// The client has not consumed the item the next one overwrites.
    Full,
    /// The client gave up on the call (invariant 5).
    Abandoned,
}

/// The claim lock of a ring, held by a server. Released on drop.
pub struct ServerLock<'c, C: Cells> {
    c: &'c C,
    server: usize,
}

impl<'c, C: Cells> ServerLock<'c, C> {
    /// Tries once to take `c`'s claim lock as server `server`; the holder if it is taken.
    #[inline]
    pub fn acquire(c: &'c C, server: usize) -> Result<Self, Holder> {
        debug_assert!(server < MAX_SERVERS);
        let lock = c.lock();
        let me = server as u64 + 1;
        // Relaxed look, then Acquire CAS: pairs with the last holder's Release, so its head,
        // claim and state stores are visible (invariant 1).
        let v = lock.load(Ordering::Relaxed);
        if v != 0 {
            return Err(Holder::of(v));
        }
        match lock.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => Ok(ServerLock { c, server }),
            Err(v) => Err(Holder::of(v)),
        }
    }

    /// Takes up to `max` posted calls from the head, in position order (invariants 1, 4); `f`
    /// receives each. `owner` is this server's owner word. Returns how many were taken.
    #[inline]
    pub fn take(&mut self, owner: u64, max: usize, mut f: impl FnMut(Call)) -> usize {
        let c = self.c;
        // Relaxed: under the lock, ordered by its Acquire.
        let mut h = c.head().load(Ordering::Relaxed);
        let mut taken = 0;
        // Bounded: each step moves the head on or stops; garbage words cost at most this many.
        for _ in 0..=c.slot_mask() {
            if taken == max {
                break;
            }
            let slot = (h & c.slot_mask()) as usize;
            match status(c, slot) {
                Status::Posted { pos } if pos == h => {
                    // Relaxed: `taker` before `claim`, whose Release store publishes it.
                    c.taker(slot).store(owner, Ordering::Relaxed);
                    // Release: for readers without the lock (the client's status).
                    c.claim(slot)
                        .store(call_state(h, self.server, TAKEN), Ordering::Release);
                    // Relaxed: ordered by the Acquire load of POSTED in `status`.
                    let len = c.len(slot).load(Ordering::Relaxed);
                    let n = c.consumed(slot).load(Ordering::Relaxed) & CONSUMED_COUNT;
                    f(Call {
                        slot,
                        pos: h,
                        len,
                        next: n,
                        first: n,
                    });
                    taken += 1;
                    h += 1;
                }
                Status::Unused => break, // not posted yet
                Status::Posted { pos }
                | Status::Cancelled { pos }
                | Status::Taken { pos, .. }
                | Status::Released { pos } => {
                    if pos < h {
                        break; // not posted yet
                    }
                    if pos == h {
                        h += 1; // cancelled, or taken by a holder that died before moving on
                    } else {
                        // The slot was reused: every position from the head up to the lowest
                        // one still in the ring has passed. Jump there.
                        h = lowest_position_from(c, h);
                    }
                }
            }
        }
        // Relaxed: published by the Release of the lock.
        c.head().store(h, Ordering::Relaxed);
        taken
    }

    /// Gives a call this server took (and did not start answering) back: it is posted again, for
    /// any server.
    pub fn give_back(&mut self, call: &Call) {
        let c = self.c;
        // Relaxed: under the lock; published by its Release.
        let head = c.head().load(Ordering::Relaxed);
        c.head().store(head.min(call.pos), Ordering::Relaxed);
        // Release: the claim word no longer says TAKEN: the call is posted again.
        let _ = c.claim(call.slot).compare_exchange(
            call_state(call.pos, self.server, TAKEN),
            call_state(call.pos, self.server, UNUSED),
            Ordering::Release,
            Ordering::Relaxed,
        );
    }
}

impl<C: Cells> Drop for ServerLock<'_, C> {
    fn drop(&mut self) {
        // Release: our head and claims are visible to the next holder. A plain store: while we
        // live, nobody else changes a lock we hold (others release only a dead server's).
        self.c.lock().store(0, Ordering::Release);
    }
}

/// The lowest call position at or after `from` still held by a slot of `c` (every position from
/// `from` up to it has passed: its slot holds a later call); `from` if there is none.
fn lowest_position_from(c: &impl Cells, from: u64) -> u64 {
    (0..=c.slot_mask() as usize)
        .filter_map(|slot| {
            // Acquire: as in `status`.
            let (pos, _, kind) = split_state(c.state(slot).load(Ordering::Acquire));
            (kind != UNUSED && pos >= from).then_some(pos)
        })
        .min()
        .unwrap_or(from)
}

impl Call {
    /// The number of the next item to write (its payload lives in item slot `n % K`).
    #[inline]
    pub fn item(&self) -> u64 {
        self.next
    }

    /// Whether the next item may be written (invariant 3). `stream`: the call is answered with a
    /// stream, which stops when the client gives up (invariant 5).
    #[inline]
    pub fn room(&self, c: &impl Cells, stream: bool) -> Room {
        if self.next == self.first && !stream {
            // The call's first item: every earlier one was consumed before the call was posted.
            return Room::Ready;
        }
        // Acquire: pairs with the client's Release store of `consumed`: it has finished reading
        // the item we are about to overwrite.
        let w = c.consumed(self.slot).load(Ordering::Acquire);
        let abandoned = w & CONSUMED_ABANDONED != 0;
        if stream && abandoned {
            return Room::Abandoned;
        }
        if self.next.wrapping_sub(w) & CONSUMED_COUNT <= c.item_mask() {
            Room::Ready
        } else if abandoned {
            Room::Abandoned
        } else {
            Room::Full
        }
    }

    /// Publishes the next item with `flags` and payload length `len`; its payload must be written
    /// and [`Call::room`] must have said [`Room::Ready`].
    #[inline]
    pub fn commit(&mut self, c: &impl Cells, flags: u64, len: u64) {
        let (slot, n) = (self.slot, self.next);
        // Relaxed: published by the Release stamp store.
        c.item_call(slot, n).store(self.pos, Ordering::Relaxed);
        c.item_len(slot, n).store(len, Ordering::Relaxed);
        c.item_flags(slot, n).store(flags, Ordering::Relaxed);
        // Release: the payload, the words above and our reads of the request happen before the
        // client's Acquire load of the stamp (invariants 2b, 3).
        c.stamp(slot, n).store(n + 1, Ordering::Release);
        self.next = (n + 1) & CONSUMED_COUNT;
    }

    /// Gives the call up without END (the client gave up, or does not read): the client treats
    /// it like a gone server (invariant 2c). Nothing may be written for it afterwards.
    pub fn release(&self, c: &impl Cells, server: usize) {
        // Release: our reads of the request and writes of items come before; Relaxed on failure:
        // the call is not ours any more.
        let _ = c.claim(self.slot).compare_exchange(
            call_state(self.pos, server, TAKEN),
            call_state(self.pos, server, CANCELLED),
            Ordering::Release,
            Ordering::Relaxed,
        );
    }
}

/// Cells on the heap, for tests and loom models.
#[cfg(any(test, loom))]
pub mod model {
    use super::*;
    use crate::ring::words::{words, Words};

    /// A ring's cells as plain vectors.
    pub struct VecCells {
        /// F - 1
        pub slot_mask: u64,
        /// K - 1
        pub item_mask: u64,
        /// head
        pub head: AtomicU64,
        /// claim lock
        pub lock: AtomicU64,
        /// claim words
        pub claims: Words,
        /// taker words
        pub takers: Words,
        /// state words
        pub states: Words,
        /// ended words
        pub ended: Words,
        /// request lengths
        pub lens: Words,
        /// consumed words
        pub consumed: Words,
        /// item stamps, slot-major
        pub stamps: Words,
        /// item call words
        pub calls: Words,
        /// item lengths
        pub item_lens: Words,
        /// item flags
        pub flags: Words,
    }

    impl VecCells {
        /// A ring of `slots` call slots of `depth` items each (zeroed: every slot unused).
        pub fn new(slots: usize, depth: usize) -> VecCells {
            VecCells {
                slot_mask: slots as u64 - 1,
                item_mask: depth as u64 - 1,
                head: AtomicU64::new(0),
                lock: AtomicU64::new(0),
                claims: words(slots, 0),
                takers: words(slots, 0),
                states: words(slots, 0),
                ended: words(slots, 0),
                lens: words(slots, 0),
                consumed: words(slots, 0),
                stamps: words(slots * depth, 0),
                calls: words(slots * depth, 0),
                item_lens: words(slots * depth, 0),
                flags: words(slots * depth, 0),
            }
        }

        fn s(&self, slot: usize) -> usize {
            slot & self.slot_mask as usize
        }

        fn i(&self, slot: usize, n: u64) -> usize {
            self.s(slot) * (self.item_mask as usize + 1) + (n & self.item_mask) as usize
        }
    }

    impl Cells for VecCells {
        fn slot_mask(&self) -> u64 {
            self.slot_mask
        }
        fn item_mask(&self) -> u64 {
            self.item_mask
        }
        crate::ring::word_accessors! {
            head, lock;
            claim => claims, taker => takers, state => states, ended => ended, len => lens,
            consumed => consumed [s(slot: usize)];
            stamp => stamps, item_call => calls, item_len => item_lens, item_flags => flags
            [i(slot: usize, n: u64)];
        }
    }

    /// An environment for tests: the lock is waited for by yielding; `dead` servers are dead.
    pub struct ModelEnv {
        /// Bitmap of dead servers.
        pub dead: u64,
    }

    impl Env for ModelEnv {
        fn lock_busy(&mut self, _holder: Holder, _attempt: u32) -> bool {
            #[cfg(loom)]
            loom::thread::yield_now();
            #[cfg(not(loom))]
            std::thread::yield_now();
            true
        }
        fn taker_alive(&mut self, server: usize, _taker: u64) -> bool {
            self.dead & (1 << server) == 0
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::model::{ModelEnv, VecCells};
    use super::*;

    fn live() -> ModelEnv {
        ModelEnv { dead: 0 }
    }

    fn send(caller: &Caller, c: &VecCells) -> (usize, u64) {
        let (slot, pos) = caller.next();
        caller.reserve(slot, pos);
        caller.post(c, slot, pos, 8);
        (slot, pos)
    }

    fn take_all(c: &VecCells, server: usize) -> Vec<Call> {
        let mut got = vec![];
        let mut lock = ServerLock::acquire(c, server).unwrap();
        lock.take(7, usize::MAX, |call| got.push(call));
        got
    }

    /// The positions of the calls server `server` takes.
    fn positions(c: &VecCells, server: usize) -> Vec<u64> {
        take_all(c, server).iter().map(|call| call.pos).collect()
    }

    /// A ring of `slots` call slots of `depth` items and its client.
    fn client(slots: usize, depth: usize) -> (VecCells, Caller) {
        let c = VecCells::new(slots, depth);
        let caller = Caller::adopt(&c);
        (c, caller)
    }

    /// A ring of `slots` call slots where a client posted two calls (positions 0 and 1).
    fn two_posted(slots: usize) -> VecCells {
        let (c, caller) = client(slots, 1);
        send(&caller, &c);
        send(&caller, &c);
        c
    }

    /// A ring and its client, whose first call (in the returned slot) server 0 took.
    fn taken(slots: usize, depth: usize) -> (VecCells, Caller, usize, Call) {
        let (c, caller) = client(slots, depth);
        let (slot, _) = send(&caller, &c);
        let call = take_all(&c, 0)[0];
        (c, caller, slot, call)
    }

    #[test]
    fn post_take_respond_read() {
        let (c, caller) = client(2, 2);
        let (slot, pos) = send(&caller, &c);
        assert!(worth_taking(&c));
        let calls = take_all(&c, 3);
        assert_eq!(calls.len(), 1);
        assert_eq!((calls[0].slot, calls[0].pos, calls[0].len), (slot, pos, 8));
        assert_eq!(status(&c, slot), Status::Taken { pos, server: 3 });
        assert!(!worth_taking(&c));
        let mut call = calls[0];
        assert_eq!(call.room(&c, false), Room::Ready);
        assert!(!caller.watch(&c, slot).ready());
        call.commit(&c, DATA | END, 5);
        assert!(caller.watch(&c, slot).ready());
        let item = caller.poll(&c, slot).unwrap();
        assert_eq!((item.len, item.flags), (5, DATA | END));
        caller.consume(&c, slot, true);
        assert!(caller.ended(slot));
        caller.finish(&c, slot, &mut live());
        assert_eq!(caller.phase(slot), Phase::Free);
        assert_eq!(caller.in_flight(), 0);
    }

    #[test]
    fn cancel_before_take_is_skipped_by_servers() {
        let (c, caller) = client(4, 1);
        let (s0, _) = send(&caller, &c);
        let (_, p1) = send(&caller, &c);
        assert!(caller.cancel(&c, s0, &mut live()));
        assert_eq!(positions(&c, 0), [p1]);
    }

    #[test]
    fn cancel_after_take_fails_and_abandons() {
        let (c, caller, slot, mut call) = taken(1, 1);
        assert_eq!(caller.finish(&c, slot, &mut live()), 0);
        assert_eq!(caller.phase(slot), Phase::Abandoned);
        assert!(c.consumed[0].load(Ordering::SeqCst) & CONSUMED_ABANDONED != 0);
        // A unary answer still goes out; the client discards it and frees the slot.
        assert_eq!(call.room(&c, false), Room::Ready);
        call.commit(&c, DATA | END, 1);
        assert_eq!(caller.collect(&c, slot, false, &mut live()), 1);
        assert_eq!(caller.phase(slot), Phase::Free);
    }

    #[test]
    fn stream_waits_for_room_and_stops_when_abandoned() {
        let (c, caller, slot, mut call) = taken(1, 2);
        for _ in 0..2 {
            assert_eq!(call.room(&c, true), Room::Ready);
            call.commit(&c, DATA, 1);
        }
        assert_eq!(call.room(&c, true), Room::Full);
        assert!(caller.poll(&c, slot).is_some());
        caller.consume(&c, slot, false);
        assert_eq!(call.room(&c, true), Room::Ready);
        call.commit(&c, DATA, 1);
        caller.finish(&c, slot, &mut live());
        assert_eq!(call.room(&c, true), Room::Abandoned);
        call.release(&c, 0);
        assert_eq!(status(&c, slot), Status::Released { pos: 0 });
        caller.collect(&c, slot, false, &mut live());
        assert_eq!(caller.phase(slot), Phase::Free);
    }

    #[test]
    fn dead_taker_frees_only_when_judged() {
        let (c, caller) = client(1, 1);
        let (slot, _) = send(&caller, &c);
        take_all(&c, 2);
        caller.finish(&c, slot, &mut live());
        let mut dead = ModelEnv { dead: 1 << 2 };
        caller.collect(&c, slot, false, &mut dead);
        assert_eq!(caller.phase(slot), Phase::Abandoned);
        caller.collect(&c, slot, true, &mut live());
        assert_eq!(caller.phase(slot), Phase::Abandoned);
        caller.collect(&c, slot, true, &mut dead);
        assert_eq!(caller.phase(slot), Phase::Free);
    }

    #[test]
    fn give_back_reposts() {
        let c = two_posted(4);
        let calls = take_all(&c, 0);
        assert_eq!(calls.len(), 2);
        {
            let mut lock = ServerLock::acquire(&c, 0).unwrap();
            lock.give_back(&calls[1]);
            assert_eq!(ServerLock::acquire(&c, 1).err(), Some(Holder::Server(0)));
        }
        assert_eq!(positions(&c, 1), [1]);
    }

    #[test]
    fn a_reused_slot_makes_the_head_jump() {
        let (c, caller) = client(2, 1);
        for _ in 0..3 {
            let (slot, pos) = send(&caller, &c);
            caller.unpost(&c, slot, pos); // the state word moves on; the head stays at 0
        }
        let (_, p) = send(&caller, &c);
        // Slot 0 holds position 2 > head 0: the head jumps to the lowest position still there
        // (2), then passes it. A walk is bounded by F steps: the next take goes on from there.
        assert!(take_all(&c, 0).is_empty());
        assert_eq!(c.head.load(Ordering::SeqCst), p);
        assert_eq!(positions(&c, 0), [p]);
    }

    #[test]
    fn adoption_continues_after_the_highest_position() {
        let (c, old) = client(4, 1);
        let (s0, _) = send(&old, &c);
        let (s1, _) = send(&old, &c);
        let mut calls = take_all(&c, 0);
        // Call 0 answered and read; call 1 taken, unanswered, when the client dies.
        calls[0].commit(&c, DATA | END, 0);
        old.poll(&c, s0).unwrap();
        old.consume(&c, s0, true);
        let new = Caller::adopt(&c);
        assert_eq!(new.next().1, 2);
        for slot in 0..4 {
            new.collect(&c, slot, true, &mut live());
        }
        assert_eq!(new.phase(s0), Phase::Free, "its END was read before");
        assert_eq!(new.phase(s1), Phase::Abandoned, "a live server holds it");
        calls[1].commit(&c, DATA | END, 0);
        new.collect(&c, s1, false, &mut live());
        assert_eq!(new.phase(s1), Phase::Free);
    }

    #[test]
    fn reclaiming_a_dead_client_cancels_its_posted_calls() {
        let c = two_posted(2);
        {
            let _held = ServerLock::acquire(&c, 5).unwrap();
            // The server dies holding the lock; its reclaim frees it.
            std::mem::forget(_held);
        }
        release_lock_of_dead(&c, 4); // not the holder: no effect
        assert_eq!(ServerLock::acquire(&c, 0).err(), Some(Holder::Server(5)));
        release_lock_of_dead(&c, 5);
        let lock = ClientLock::acquire(&c, |_, _| false).unwrap();
        lock.cancel_all_posted();
        drop(lock);
        assert!(take_all(&c, 0).is_empty());
        assert_eq!(status(&c, 0), Status::Cancelled { pos: 0 });
    }

    #[test]
    fn stale_items_of_an_earlier_call_are_skipped() {
        let (c, caller, slot, mut call) = taken(1, 2);
        call.commit(&c, DATA, 0);
        call.commit(&c, DATA | END, 0);
        assert_eq!(
            caller.collect(&c, slot, false, &mut live()),
            0,
            "not abandoned"
        );
        let item = caller.poll(&c, slot).unwrap();
        assert_eq!(item.n, 0);
        caller.consume(&c, slot, false);
        let item = caller.poll(&c, slot).unwrap();
        assert_eq!((item.n, item.flags), (1, DATA | END));
        caller.consume(&c, slot, true);
        caller.finish(&c, slot, &mut live());
        // Next call in the same slot: a stale item forged for position 0 at n = 2 is skipped.
        let (slot, pos) = send(&caller, &c);
        assert_eq!(pos, 1);
        c.calls[0].store(0, Ordering::SeqCst);
        c.stamps[0].store(3, Ordering::SeqCst);
        assert_eq!(caller.poll(&c, slot), None);
        assert_eq!(c.consumed[0].load(Ordering::SeqCst), 3);
    }
}

#[cfg(loom)]
mod loom_tests {
    use super::model::{ModelEnv, VecCells};
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;

    fn model(f: impl Fn() + Sync + Send + 'static) {
        // Bounded preemptions keep the search to seconds; the races need at most two.
        crate::loom::model::builder(3).check(f);
    }

    fn live() -> ModelEnv {
        ModelEnv { dead: 0 }
    }

    /// A ring of one slot of `depth` items, with a request cell and item payload cells whose
    /// accesses loom checks for races.
    struct Ring {
        c: VecCells,
        request: UnsafeCell<u64>,
        items: Vec<UnsafeCell<u64>>,
    }

    impl Ring {
        fn new(depth: usize) -> Arc<Ring> {
            Arc::new(Ring {
                c: VecCells::new(1, depth),
                request: UnsafeCell::new(0),
                items: (0..depth).map(|_| UnsafeCell::new(0)).collect(),
            })
        }

        /// The client writes request `v` in its (free) slot and posts it.
        fn call(&self, caller: &Caller, v: u64) -> usize {
            let (slot, pos) = caller.next();
            caller.reserve(slot, pos);
            // SAFETY: loom fails the model if a server accesses the cell concurrently.
            self.request.with_mut(|p| unsafe { *p = v });
            caller.post(&self.c, slot, pos, 8);
            slot
        }

        /// A server reads the request of `call`.
        fn read_request(&self) -> u64 {
            // SAFETY: as in `call`.
            self.request.with(|p| unsafe { *p })
        }

        /// Server `s` takes one call, retrying while the lock is busy; `None` if none is posted.
        fn take(&self, s: usize) -> Option<Call> {
            loop {
                match ServerLock::acquire(&self.c, s) {
                    Ok(mut lock) => {
                        let mut got = None;
                        lock.take(s as u64 + 100, 1, |call| got = Some(call));
                        return got;
                    }
                    Err(_) => loom::thread::yield_now(),
                }
            }
        }

        /// Writes payload `v` into the call's next item, waiting for room; publishes it with
        /// `flags`. False if the client gave up (`stream` only).
        fn send(&self, call: &mut Call, v: u64, flags: u64, stream: bool) -> bool {
            loop {
                match call.room(&self.c, stream) {
                    Room::Ready => break,
                    Room::Full => loom::thread::yield_now(),
                    Room::Abandoned => return false,
                }
            }
            let at = (call.item() & self.c.item_mask) as usize;
            // SAFETY: as in `call`: the client must not be reading this item.
            self.items[at].with_mut(|p| unsafe { *p = v });
            call.commit(&self.c, flags, 8);
            true
        }

        /// The client waits until `slot` is free again (its abandoned call is over), then
        /// writes the next request there.
        fn reuse(&self, caller: &Caller, slot: usize) {
            let mut env = live();
            while caller.phase(slot) != Phase::Free {
                loom::thread::yield_now();
                caller.collect(&self.c, slot, false, &mut env);
            }
            self.call(caller, 2);
        }
    }

    /// A model where a client posted request 1 in a ring of one slot of one item: `server` runs
    /// in a second thread (and takes the call itself), `client` in the model's own thread with the
    /// call's slot; then the server is joined.
    fn posted(server: fn(&Ring), client: fn(&Ring, &Caller, usize)) {
        one_call(false, move |r, _| server(r), client);
    }

    /// As [`posted`], but server 0 took the call before the threads start: `server` runs with it.
    fn taken(server: fn(&Ring, Call), client: fn(&Ring, &Caller, usize)) {
        one_call(
            true,
            move |r, call| server(r, call.expect("posted")),
            client,
        );
    }

    /// The set-up of [`posted`] and [`taken`].
    fn one_call(
        taken: bool,
        server: impl Fn(&Ring, Option<Call>) + Copy + Send + Sync + 'static,
        client: fn(&Ring, &Caller, usize),
    ) {
        model(move || {
            let r = Ring::new(1);
            let caller = Caller::adopt(&r.c);
            let slot = r.call(&caller, 1);
            let call = if taken { r.take(0) } else { None };
            let r2 = r.clone();
            let server = loom::thread::spawn(move || server(&r2, call));
            client(&r, &caller, slot);
            server.join().unwrap();
        });
    }

    /// The client gives up on its call in `slot` (drops it) and writes its next request there
    /// once the slot is free.
    fn abandon(r: &Ring, caller: &Caller, slot: usize) {
        caller.finish(&r.c, slot, &mut live());
        r.reuse(caller, slot);
    }

    /// A client drops its pending call (cancel under the claim lock) while a server takes it:
    /// either the cancel wins and no server ever reads the request, or the take wins and the
    /// client waits for the call's END before it reuses the slot. Loom fails the model on the race
    /// between the server's read of the request and the client's next request if both believe
    /// they won.
    ///
    /// Shown to fail: with `ClientLock::cancel` storing CANCELLED without rechecking the status
    /// under the lock (returning true for a taken call), loom reports a concurrent access of the
    /// request cell (the server reads request 1 while the client writes request 2). Likewise with
    /// the claim lock taken with a Relaxed instead of an Acquire compare-and-swap on both sides
    /// (`ClientLock::acquire`, `ServerLock::acquire`): the client's status load under the lock
    /// may miss the TAKEN claim the server stored under it.
    #[test]
    fn cancel_vs_claim() {
        posted(
            |r| {
                if let Some(mut call) = r.take(0) {
                    assert_eq!(r.read_request(), 1, "read another call's request");
                    r.send(&mut call, 10, DATA | END, false);
                }
            },
            abandon,
        );
    }

    /// A server answers a call while its client abandons it (a timeout): the client discards the
    /// answer and reuses the slot only after reading it, by which time the server has finished
    /// with the request.
    ///
    /// Shown to fail: with the item's stamp stored Relaxed in `Call::commit`, loom reports the
    /// server's read of the request racing with the client's next request (the client saw END
    /// without the server's earlier read happening before).
    #[test]
    fn respond_vs_abandon() {
        taken(
            |r, mut call| {
                assert_eq!(r.read_request(), 1);
                r.send(&mut call, 10, DATA | END, false);
            },
            abandon,
        );
    }

    /// A streaming server (depth 1) reads its request between items while the client abandons
    /// the call: the server sees ABANDONED (or gets room and ends the stream) and releases the
    /// call; the client reuses the slot only once the stream ended or was released.
    ///
    /// Shown to fail: with the release's compare-and-swap Relaxed in `Call::release`, loom
    /// reports the server's second read of the request racing with the client's next request
    /// (the client saw the released claim without the read happening before).
    #[test]
    fn stream_stop_vs_abandon() {
        taken(
            |r, mut call| {
                assert_eq!(r.read_request(), 1);
                if r.send(&mut call, 10, DATA, true) {
                    assert_eq!(r.read_request(), 1);
                    if !r.send(&mut call, 0, END, true) {
                        call.release(&r.c, 0);
                    }
                } else {
                    call.release(&r.c, 0);
                }
            },
            abandon,
        );
    }

    /// A server streams three items and END through one item slot (depth 1) while the client
    /// reads them in place: every item arrives, in order, and the server never overwrites an item
    /// the client is reading.
    ///
    /// Shown to fail: with `Call::room` not checking the consumed count (always `Ready`), loom
    /// reports the server's write of item 1 racing with the client's read of item 0; with the
    /// client's `consumed` store Relaxed (`Caller::store_consumed`), the same race (the server
    /// saw the count without the client's read happening before).
    #[test]
    fn stream_room() {
        taken(
            |r, mut call| {
                for v in 0..2 {
                    assert!(r.send(&mut call, v, DATA, true));
                }
                assert!(r.send(&mut call, 0, END, true));
            },
            |r, caller, slot| {
                let mut got = vec![];
                loop {
                    let Some(item) = caller.poll(&r.c, slot) else {
                        loom::thread::yield_now();
                        continue;
                    };
                    let end = item.flags & END != 0;
                    if !end {
                        let at = (item.n & r.c.item_mask) as usize;
                        // SAFETY: loom fails the model if the server writes the item concurrently.
                        got.push(r.items[at].with(|p| unsafe { *p }));
                    }
                    caller.consume(&r.c, slot, end);
                    if end {
                        break;
                    }
                }
                assert_eq!(got, [0, 1]);
                caller.finish(&r.c, slot, &mut live());
                assert_eq!(caller.phase(slot), Phase::Free);
            },
        );
    }
}
