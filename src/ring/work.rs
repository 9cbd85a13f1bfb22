//! The work ring: a multi-producer, multi-consumer queue of slots whose messages are each
//! delivered to one consumer at a time, acknowledged, and handed back if not acknowledged.
//!
//! `N` slots (a power of two); position `q` lives in slot `q % N`. Producers reserve positions
//! in order (under an append lock the caller holds), fill the payload, and publish. Consumers
//! claim published positions (under a claim lock the caller holds), open them, read the payload
//! in place, and acknowledge or hand them back. A delivery not acknowledged in time, or held by a
//! consumer that died, is taken back by a claimer (under the claim lock) and delivered again;
//! a consumer that lost a delivery it was reading stays registered as a *stale reader* of the slot
//! until it lets go, so the slot is not reused under it.
//!
//! This file holds the slot state word and every transition of it; the queue layer
//! (`crate::queue`) holds the locks, the cursor and head walks, liveness judgements, waking,
//! and the payload bytes.
//!
//! # Cells
//! - `state[slot]`: the slot state word (see [`State`]): `position (40 bits) << 24 | count (12)
//!   << 12 | owner (8) << 4 | STALE (1) << 3 | kind (3)`.
//! - `deadline[slot]`: the visibility deadline of the current delivery (milliseconds of a clock
//!   every participant shares). Written and read only by claim-lock holders.
//! - `stale[slot]`: bitmap of consumers registered as stale readers of the slot.
//! - `tail`: the next position to reserve. Read and written only by append-lock holders.
//! - `writing[p]`: position + 1 that producer `p` is filling (0: none). Written by `p` (and by
//!   whoever reclaims `p` once it is dead).
//!
//! Kinds: [`FREE`]`(q)` (writable for position `q`), [`WRITING`]`(q, p)` (reserved by producer
//! `p`), [`READY`]`(q, k)` (published, `k` deliveries so far), [`TAKEN`]`(q, c, k)` (claimed by
//! consumer `c`, its `k`-th delivery), [`OPEN`]`(q, c, k)` (that delivery handed to the
//! application), [`ACKED`]`(q)` (acknowledged while stale readers still read it; always with
//! STALE), [`SKIP`]`(q)` (reserved, then given up). The STALE flag says that some delivery of
//! the message was taken back from a consumer that may still be reading it.
//!
//! # Invariants
//! 1. **Exact transitions.** Every change of a state word is a compare-and-swap from the exact
//!    word the changer saw (kind, position, owner, count, flag), except three stores, each by the
//!    only party that may change the word at that moment: the reservation `FREE(q) → WRITING(q,
//!    p)` (the append-lock holder: nobody else changes a slot free for the tail's lap), the claim
//!    `READY(q) → TAKEN/OPEN(q, c)` (the claim-lock holder: nobody else changes a READY slot),
//!    and the recovery's [`reset`] (no participant alive). The position in the word names the
//!    lap, so a compare-and-swap prepared in one lap fails in every other one (positions are kept
//!    modulo 2^40: a word 2^40 positions stale is not considered).
//! 2. **One end per delivery.** A delivery `TAKEN/OPEN(q, c, k)` ends by exactly one of: its
//!    owner's [`ack`], its owner's [`nack`], or a claimer's [`take_back`] (deadline passed, or
//!    owner dead). All three are compare-and-swaps from the same word: one wins, the others fail
//!    (`Expired`). So a message is acknowledged at most once per delivery, and a delivery taken
//!    back is never acknowledged.
//! 3. **Payload ownership.** The payload of position `q` is written only by the producer holding
//!    `WRITING(q, p)`, and read only by the consumer holding a delivery of `q` it opened, or by a
//!    stale reader of the slot (its bit set). A slot becomes `FREE(q + N)` (writable by the next
//!    lap's producer) only from: `SKIP(q)`; `WRITING(q, p)` of a producer judged gone
//!    (invariant 5: it writes nothing more); its owner's acknowledgement of a delivery without
//!    STALE (no delivery of it was ever taken back from a reader, so the owner is its only
//!    reader); or `ACKED(q)` once the stale bitmap is empty (invariant 4).
//! 4. **Stale readers.** A reader bit is set only by a claim-lock holder taking back an OPEN
//!    delivery from a live owner, before its compare-and-swap; the taken-back message carries
//!    STALE until it is acknowledged (`ACKED`, STALE kept) or the slot is freed. A bit is cleared
//!    only by its reader letting go of its last view of the slot, by the taker whose
//!    compare-and-swap failed (undoing its own bit, still under the claim lock), or on behalf of
//!    a dead reader. Whichever of "the last reader lets go" and "the message is acknowledged"
//!    comes second frees the slot (the free race, see below); at most one frees it (a CAS).
//! 5. **Passing a producer over.** A `WRITING(q, p)` slot is changed by someone other than `p`
//!    only once `p` is judged gone: its process dead, or its `writing` word not naming `q` (then
//!    `p` published or gave up `q`, the state is no longer `WRITING(q, p)`, and the CAS fails).
//!    A live producer is never judged gone: it stores `writing = q + 1` before `WRITING(q, p)`
//!    (Release), so a judge that loaded `WRITING(q, p)` (Acquire) sees it. A producer's own
//!    publish and abandon are CASes from its `WRITING(q, p)`, so a position passed over is never
//!    published into a later lap ([`PassedOver`]).
//! 6. **Reservation order.** Positions are reserved in tail order under the append lock, so each
//!    producer's messages are in the ring in the order it sent them. A slot already marked for
//!    the tail's lap (a lock holder died between marking it and moving `tail`) is passed, at most
//!    `N` of them per reservation.
//!
//! # Memory ordering
//! - Publish: the payload (and the queue's length word) are written before the Release CAS
//!   `WRITING → READY`; a claimer Acquire-loads `READY` before reading them.
//! - Reserve: the Acquire load of `FREE(q)` pairs with the Release of whoever freed the slot
//!   (acknowledgement, free after the last stale reader, pass-over), so every read of the
//!   previous lap's payload happens before the new lap's writes.
//! - Claim: a store under the claim lock (invariant 1), with Release like every other change of
//!   a state word: an Acquire load or failed CAS of a state word then sees everything written
//!   before any earlier change of it (C++20 release sequences continue only through
//!   read-modify-writes, so a Relaxed store there would cut the chain: loom found an owner that
//!   read the claimer's word after a take-back without seeing the take-back's reader bit). The
//!   deadline is a plain store too, read only by claim-lock holders.
//! - Take back: the reader bit is set before the Release CAS; the owner's compare-and-swap that
//!   fails on the taken-back word has Acquire on failure, so it sees its bit and lets it go.
//! - Nack and ack (no STALE): Release CAS, so the owner's reads of the payload happen before the
//!   next claimer's (its Acquire load) or the next producer's (its Acquire load of FREE).
//! - **The free race** (invariant 4) is a store-buffer (Dekker) pattern: the acknowledger CASes
//!   the state to `ACKED`, then reads the stale bitmap; a reader letting go clears its bit, then
//!   reads the state. Both sides touch the bitmap with a read-modify-write (AcqRel; the
//!   acknowledger's `fetch_and` may change nothing), and the read-modify-writes of one word are
//!   totally ordered, each reading the value of the one before it. If the reader's comes first,
//!   the acknowledger reads its bit cleared and frees (the reader's payload reads happen before,
//!   by Release/Acquire). If the acknowledger's comes first, the reader's reads from it, so the
//!   acknowledger's `ACKED` (sequenced before) is visible to the reader's Acquire load of the
//!   state, and the reader frees. So at least one side frees, and neither frees while the other
//!   still reads (a bit is still set, or the message is not yet `ACKED`); the free is a CAS, so
//!   at most one succeeds. (No fence is needed, and loom checks read-modify-writes exactly.)
//!
//! # What the loom models cannot model, and how it is argued
//! - **Locks.** The append and claim locks (`crate::sync::lock`) are outside the ring; a model
//!   gives each critical section to one thread (the single holder). A lock is taken over only
//!   from a dead holder (its timeout only makes a waiter give up with `Busy`), and a dead process
//!   makes no further access, so a take-over is a single holder too.
//! - **Process death.** A dead participant is a thread that stops between two steps; the
//!   liveness judgement (`/proc`, or the kernel's lock) is a closure the model answers, true for
//!   a thread that is still running. Death is final and observed only after the last access
//!   (the kernel reports a process dead once it has exited), which is what the models assume.
//! - **Sleeping and waking.** The queue's sleep handshake (a waiter bitmap, `membarrier` as an
//!   asymmetric barrier, a futex) is not part of this ring; a wake-up is only a prompt to retry
//!   these transitions. `membarrier` is at least as strong as a `fence(SeqCst)` on both sides
//!   (it runs a full barrier on every CPU running a thread of the process), so the handshake is
//!   argued as a fence-fence Dekker pattern (see `crate::sync::barrier`), and it can only delay,
//!   never corrupt, a slot state: every sleep has a timeout, after which the sleeper retries.
//! - **Clocks.** Deadlines are plain numbers to the ring; a model says "expired" or not.

use crate::loom::atomic::{AtomicU64, Ordering};

crate::numbered! { u64:
    /// Kind: writable for the word's position.
    pub FREE,
    /// Kind: reserved by producer `owner`.
    pub WRITING,
    /// Kind: published, `count` deliveries so far.
    pub READY,
    /// Kind: claimed by consumer `owner` (its `count`-th delivery), not yet handed out.
    pub TAKEN,
    /// Kind: acknowledged while stale readers still read it (always with [`STALE`]).
    pub ACKED,
    /// Kind: reserved, then given up: no message at this position.
    pub SKIP,
    /// Kind: claimed by consumer `owner` and handed to the application.
    pub OPEN,
}
/// Flag: some delivery of the message was taken back from a consumer that may still read it.
pub const STALE: u64 = 1 << 3;
/// Bits of the position kept in a state word.
pub const POS_BITS: u32 = 40;
const POS_MASK: u64 = (1 << POS_BITS) - 1;
const POS_SHIFT: u32 = 24;
const COUNT_SHIFT: u32 = 12;
const COUNT_MASK: u64 = 0xfff;
const OWNER_SHIFT: u32 = 4;
const OWNER_MASK: u64 = 0xff;
const KIND_MASK: u64 = 7;
/// Most consumers (one bit each in a slot's stale bitmap) and most producers.
pub const MAX_OWNERS: usize = 64;
/// Largest delivery count a state word holds.
pub const MAX_COUNT: u32 = COUNT_MASK as u32;

/// A slot state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State(pub u64);

impl State {
    /// Packs a state word (position kept modulo 2^40, count and owner cut to their fields).
    #[inline]
    pub fn new(kind: u64, pos: u64, owner: usize, count: u32) -> State {
        State(
            (pos & POS_MASK) << POS_SHIFT
                | (u64::from(count) & COUNT_MASK) << COUNT_SHIFT
                | (owner as u64 & OWNER_MASK) << OWNER_SHIFT
                | kind & KIND_MASK,
        )
    }
    /// `FREE` for position `pos`.
    #[inline]
    pub fn free(pos: u64) -> State {
        State::new(FREE, pos, 0, 0)
    }
    /// The kind ([`FREE`] ... [`OPEN`]; 7 is no kind).
    #[inline]
    pub fn kind(self) -> u64 {
        self.0 & KIND_MASK
    }
    /// Whether the STALE flag is set.
    #[inline]
    pub fn stale(self) -> bool {
        self.0 & STALE != 0
    }
    /// The producer (WRITING) or consumer (TAKEN, OPEN) the state names.
    #[inline]
    pub fn owner(self) -> usize {
        ((self.0 >> OWNER_SHIFT) & OWNER_MASK) as usize
    }
    /// Deliveries of the message so far.
    #[inline]
    pub fn count(self) -> u32 {
        ((self.0 >> COUNT_SHIFT) & COUNT_MASK) as u32
    }
    /// The position, modulo 2^40.
    #[inline]
    fn pos_bits(self) -> u64 {
        self.0 >> POS_SHIFT
    }
    /// Whether the state is about position `pos` (its lap).
    #[inline]
    pub fn is_for(self, pos: u64) -> bool {
        self.pos_bits() == pos & POS_MASK
    }
    /// Whether the state is about a position after `pos` (a later lap of the slot: position
    /// `pos` is done with, whatever happened since).
    #[inline]
    pub fn is_after(self, pos: u64) -> bool {
        let d = self.pos_bits().wrapping_sub(pos & POS_MASK) & POS_MASK;
        d != 0 && d < 1 << (POS_BITS - 1)
    }
    #[inline]
    fn with_kind(self, kind: u64) -> State {
        State(self.0 & !KIND_MASK | kind)
    }
    #[inline]
    fn with_stale(self, stale: bool) -> State {
        State(if stale {
            self.0 | STALE
        } else {
            self.0 & !STALE
        })
    }
    /// Whether the state is a delivery (TAKEN, or OPEN).
    #[inline]
    fn is_delivered(self) -> bool {
        matches!(self.kind(), TAKEN | OPEN)
    }
    /// The same message back in the queue: READY, no owner, count and flag kept.
    #[inline]
    fn back(self) -> State {
        State(self.0 & !(OWNER_MASK << OWNER_SHIFT) & !KIND_MASK | READY)
    }
    /// `FREE` for the next lap of this state's slot, in a ring of `n` slots.
    #[inline]
    fn next_lap(self, n: u64) -> State {
        State::free(self.pos_bits().wrapping_add(n))
    }
}

/// The atomic cells of one work ring, wherever they live.
pub trait Cells {
    /// `N - 1`, where `N` (the slot count) is a power of two.
    fn mask(&self) -> u64;
    /// State word of `slot`.
    fn state(&self, slot: usize) -> &AtomicU64;
    /// Visibility deadline of `slot`'s delivery.
    fn deadline(&self, slot: usize) -> &AtomicU64;
    /// Stale-reader bitmap of `slot`.
    fn stale(&self, slot: usize) -> &AtomicU64;
    /// The next position to reserve.
    fn tail(&self) -> &AtomicU64;
    /// Producer `p`'s `writing` word (position + 1 being filled, 0: none); `None` if there is
    /// no producer `p` (an owner field read from a corrupt word).
    fn writing(&self, p: usize) -> Option<&AtomicU64>;
}

#[inline]
fn slot_of(c: &impl Cells, pos: u64) -> usize {
    (pos & c.mask()) as usize
}

#[inline]
fn state_of(c: &impl Cells, pos: u64) -> &AtomicU64 {
    c.state(slot_of(c, pos))
}

/// A producer's position was passed over while it filled it (it was judged gone): the message
/// is not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassedOver;

/// A delivery was taken back (its deadline passed, or its owner was judged dead) before its
/// owner acknowledged or handed it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired;

// ---------------------------------------------------------------------------------------------
// Producers.

/// Writes `FREE(i)` into every slot of a new ring, so position `i`'s slot is free for lap 0.
pub fn init(c: &impl Cells) {
    for i in 0..=c.mask() {
        // Relaxed: the ring is published by its creator afterwards (with Release).
        c.state(i as usize)
            .store(State::free(i).0, Ordering::Relaxed);
    }
}

/// Producer `p` joins: it fills nothing yet. Before its entry is published.
pub fn producer_joined(c: &impl Cells, p: usize) {
    if let Some(w) = c.writing(p) {
        // Relaxed: published by the entry's Release claim.
        w.store(0, Ordering::Relaxed);
    }
}

/// Reserves the tail's position for producer `p`, or `None` if its slot still holds a message
/// of the previous lap (full). The caller holds the append lock (invariant 6).
#[inline]
pub fn reserve(c: &impl Cells, p: usize) -> Option<u64> {
    // Relaxed: under the append lock, which orders it with the last holder's store.
    let mut tail = c.tail().load(Ordering::Relaxed);
    let mut state = state_of(c, tail);
    let mut passed = 0;
    loop {
        // Acquire: pairs with the Release that freed the slot (an ack), so every read of the
        // previous message happened before we overwrite it.
        let s = State(state.load(Ordering::Acquire));
        if s == State::free(tail) {
            break;
        }
        let done_with = s.is_after(tail) || (s.is_for(tail) && s.kind() != FREE);
        if !done_with || passed > c.mask() {
            // Still holding a message of the previous lap: full.
            return None;
        }
        // Already reserved for this lap (or even consumed and freed): a holder of the lock
        // died after marking the slot and before moving the tail. Move past it. (Wrapping: a
        // corrupt tail must not overflow; its state words then never match.)
        tail = tail.wrapping_add(1);
        passed += 1;
        // Relaxed: under the append lock.
        c.tail().store(tail, Ordering::Relaxed);
        state = state_of(c, tail);
    }
    if let Some(w) = c.writing(p) {
        // Relaxed: ordered before the WRITING store by its Release.
        w.store(tail.wrapping_add(1), Ordering::Relaxed);
    }
    // Release: a judge that sees WRITING (Acquire) also sees our `writing` word naming the
    // position, so a live producer is never judged gone (invariant 5).
    state.store(State::new(WRITING, tail, p, 0).0, Ordering::Release);
    // Relaxed: under the append lock.
    c.tail().store(tail.wrapping_add(1), Ordering::Relaxed);
    Some(tail)
}

/// Whether the slot of `pos` is free for `pos`'s lap (a hint: Relaxed).
#[inline]
pub fn is_free_for(c: &impl Cells, pos: u64) -> bool {
    // Relaxed: a hint; decisions reread the state with Acquire.
    state_of(c, pos).load(Ordering::Relaxed) == State::free(pos).0
}

/// Publishes position `pos`, reserved and filled by producer `p`. [`PassedOver`] if the
/// position was passed over meanwhile (invariant 5): nothing is published.
#[inline]
pub fn publish(c: &impl Cells, pos: u64, p: usize) -> Result<(), PassedOver> {
    // Release: the payload (and length) are visible to the consumer that Acquire-loads READY.
    // A CAS from our exact WRITING word, never a store: if we were passed over, the slot may
    // belong to the next lap already.
    let published = state_of(c, pos)
        .compare_exchange(
            State::new(WRITING, pos, p, 0).0,
            State::new(READY, pos, 0, 0).0,
            Ordering::Release,
            Ordering::Relaxed,
        )
        .is_ok();
    if let Some(w) = c.writing(p) {
        // Relaxed: our own bookkeeping for a judge or reclaimer, which CAS the state (no
        // longer our WRITING word, so it will not match).
        w.store(0, Ordering::Relaxed);
    }
    if published {
        Ok(())
    } else {
        Err(PassedOver)
    }
}

/// Gives up reserved position `pos` of producer `p` without a message: consumers pass it.
pub fn abandon(c: &impl Cells, pos: u64, p: usize) {
    // Release: consumers that see SKIP free the slot; nothing was written they could read.
    // A CAS from our WRITING word: a position already passed over is left to its new lap.
    let _ = state_of(c, pos).compare_exchange(
        State::new(WRITING, pos, p, 0).0,
        State::new(SKIP, pos, 0, 0).0,
        Ordering::Release,
        Ordering::Relaxed,
    );
    if let Some(w) = c.writing(p) {
        // Relaxed: as in `publish`.
        w.store(0, Ordering::Relaxed);
    }
}

/// Producer `p` is dead (its entry is being reclaimed): a position it reserved and never
/// published is given up (`SKIP`). Only the exact `WRITING` word its `writing` word names is
/// changed, so a slot passed over and reused meanwhile is left to its new lap (invariant 1).
pub fn producer_died(c: &impl Cells, p: usize) {
    let Some(w) = c.writing(p) else { return };
    // Relaxed: written by the producer itself before its slot's state; a stale value only
    // makes the CAS below fail.
    let writing = w.load(Ordering::Relaxed);
    if let Some(pos) = writing.checked_sub(1) {
        // Release: the skip is published to consumers, which free the slot on seeing it.
        let _ = state_of(c, pos).compare_exchange(
            State::new(WRITING, pos, p, 0).0,
            State::new(SKIP, pos, 0, 0).0,
            Ordering::Release,
            Ordering::Relaxed,
        );
        // Relaxed: the reclaim's entry free (Release) publishes it.
        w.store(0, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// Consumers: the delivery cursor.

/// What the slot of the delivery cursor's position holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtCursor {
    /// A published message: [`claim`] it.
    Ready(State),
    /// Reserved, being filled: wait, or pass it ([`pass`]) once [`writer_gone`].
    Writing(State),
    /// Given up: [`pass`] it.
    Skipped(State),
    /// Not reserved yet: nothing to deliver.
    Empty,
    /// Delivered already (a claimer died after marking it and before moving the cursor), or
    /// freed for a later lap: the cursor moves on.
    Done,
    /// A state of no lap here (corrupt): the cursor stops.
    Corrupt,
}

/// Looks at the slot of position `pos` at the delivery cursor.
#[inline]
pub fn at_cursor(c: &impl Cells, pos: u64) -> AtCursor {
    // Acquire: pairs with the producer's Release CAS to READY (payload visible).
    let s = State(state_of(c, pos).load(Ordering::Acquire));
    if s.is_for(pos) {
        match s.kind() {
            READY => AtCursor::Ready(s),
            WRITING => AtCursor::Writing(s),
            SKIP => AtCursor::Skipped(s),
            FREE => AtCursor::Empty,
            _ => AtCursor::Done,
        }
    } else if s.is_after(pos) {
        AtCursor::Done
    } else {
        AtCursor::Corrupt
    }
}

/// Whether the producer of `WRITING` state `s` at `pos` is gone (invariant 5): `live(p)` says
/// whether producer `p` is registered to a live process. Called after [`at_cursor`] returned
/// `Writing(s)`.
pub fn writer_gone(c: &impl Cells, pos: u64, s: State, live: impl FnOnce(usize) -> bool) -> bool {
    let p = s.owner();
    let Some(w) = c.writing(p) else { return true };
    // Relaxed: after our Acquire load of WRITING, which the producer stored (Release) after its
    // `writing` word; a later value only means it moved on (and the CAS that follows fails).
    !(live(p) && w.load(Ordering::Relaxed) == pos.wrapping_add(1))
}

/// Frees the slot of `pos` for its next lap from `SKIP` or a gone producer's `WRITING` (state
/// `s`); false if the state changed meanwhile (the producer published or gave up: look again).
pub fn pass(c: &impl Cells, pos: u64, s: State) -> bool {
    // Release: nothing was written here for anyone to read, but the next producer Acquires the
    // FREE state.
    state_of(c, pos)
        .compare_exchange(
            s.0,
            s.next_lap(c.mask() + 1).0,
            Ordering::Release,
            Ordering::Relaxed,
        )
        .is_ok()
}

/// How a claim hands the message out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// To the application at once (OPEN): no [`open`] needed.
    Open,
    /// Kept aside (TAKEN) until [`open`]ed.
    Take,
    /// Past its maximum deliveries, to the dead-letter queue (TAKEN, count not raised).
    DeadLetter,
}

/// Claims READY position `pos` (state `s`) for consumer `me` until `deadline`. The caller holds
/// the claim lock (invariant 1). Returns the delivery's state.
#[inline]
pub fn claim(c: &impl Cells, pos: u64, s: State, me: usize, how: Claim, deadline: u64) -> State {
    let slot = slot_of(c, pos);
    let (kind, count) = match how {
        Claim::Open => (OPEN, s.count().saturating_add(1)),
        Claim::Take => (TAKEN, s.count().saturating_add(1)),
        Claim::DeadLetter => (TAKEN, s.count()),
    };
    let taken = State::new(kind, pos, me, count).with_stale(s.stale());
    // Relaxed: the deadline is read by claimers only, under the claim lock.
    c.deadline(slot).store(deadline, Ordering::Relaxed);
    // A store: nobody but a claim-lock holder changes a READY slot. Release, so that the chain
    // of state words stays one of releases: an owner whose compare-and-swap fails on this word
    // (Acquire) sees everything written before the words it replaced (a take-back's reader bit).
    c.state(slot).store(taken.0, Ordering::Release);
    taken
}

/// Opens delivery `s` of `pos` (TAKEN → OPEN) before the application reads it, so that a
/// take-back registers the owner as a stale reader. `None` if it was taken back first (nothing
/// to read, nothing registered). Returns the state to acknowledge.
#[inline]
pub fn open(c: &impl Cells, pos: u64, s: State) -> Option<State> {
    if s.kind() == OPEN {
        // Claimed open.
        return Some(s);
    }
    let open = s.with_kind(OPEN);
    // AcqRel: one word decides between this and a take-back (invariant 2); Acquire keeps the
    // payload reads after it.
    state_of(c, pos)
        .compare_exchange(s.0, open.0, Ordering::AcqRel, Ordering::Relaxed)
        .ok()
        .map(|_| open)
}

/// Un-opens delivery `s` of `pos` (OPEN → TAKEN): consumer `me` no longer reads it but keeps it
/// claimed (to retry later), so a take-back does not register it as a reader. If it was taken
/// back meanwhile, `me` lets go of the slot unless it `still_views` it (another delivery of the
/// same message it holds). Returns true if that freed the slot.
pub fn close(c: &impl Cells, pos: u64, s: State, me: usize, still_views: bool) -> bool {
    // AcqRel; Acquire on failure: a take-back's bit (set before its CAS) is then visible.
    let closed = state_of(c, pos)
        .compare_exchange(
            s.0,
            s.with_kind(TAKEN).0,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok();
    !closed && !still_views && release_stale(c, pos, me)
}

/// How an acknowledgement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acked {
    /// The slot is free for the next lap.
    Freed,
    /// Acknowledged; stale readers still read it (the last to let go frees it).
    Held,
}

/// Acknowledges delivery `s` of `pos` by its owner `me`; `last_view` says this was `me`'s last
/// view of the slot (an older, expired delivery of the same message may still be held).
/// [`Expired`] if it was taken back first (invariant 2).
#[inline]
pub fn ack(
    c: &impl Cells,
    pos: u64,
    s: State,
    me: usize,
    last_view: bool,
) -> Result<Acked, Expired> {
    let slot = slot_of(c, pos);
    let state = c.state(slot);
    if !s.stale() {
        // Nobody else can be reading it (invariant 3). Release: our reads of the payload happen
        // before the next producer's writes (its Acquire load of FREE). Acquire on failure: a
        // take-back's bit is visible (see below).
        let free = s.next_lap(c.mask() + 1);
        if state
            .compare_exchange(s.0, free.0, Ordering::Release, Ordering::Acquire)
            .is_ok()
        {
            return Ok(Acked::Freed);
        }
    } else {
        // Others that lost this message to its deadline may still read it: mark it
        // acknowledged, and free it only once none does (the free race).
        let acked = State::new(ACKED, pos, 0, 0).with_stale(true);
        // Release: our reads of the payload happen before a stale reader's free (its Acquire
        // load of ACKED). Acquire on failure: as above.
        if state
            .compare_exchange(s.0, acked.0, Ordering::Release, Ordering::Acquire)
            .is_ok()
        {
            // Our own bit (from an older, expired delivery of this message) goes if this was our
            // last view of it; other bits stay.
            let keep = if last_view { !bit(me) } else { u64::MAX };
            // A read-modify-write even when it changes nothing, and AcqRel: the acknowledger's
            // side of the free race (see the file doc). Acquire: a reader's clear (Release)
            // read here puts its reads of the payload before our free.
            let left = c.stale(slot).fetch_and(keep, Ordering::AcqRel) & keep;
            if left == 0 && free_acked(c, slot, acked) {
                return Ok(Acked::Freed);
            }
            return Ok(Acked::Held);
        }
    }
    // Taken back: a claimer registered us as a reader (its bit is visible through our failed
    // CAS's Acquire); we no longer read it.
    if last_view {
        release_stale(c, pos, me);
    }
    Err(Expired)
}

/// Hands delivery `s` of `pos` back to the queue (READY, count kept; `undo` takes the delivery
/// back from the count: a prefetched claim the application never saw). `last_view` as for
/// [`ack`]. [`Expired`] if it was taken back first.
pub fn nack(
    c: &impl Cells,
    pos: u64,
    s: State,
    me: usize,
    undo: bool,
    last_view: bool,
) -> Result<(), Expired> {
    let count = if undo {
        s.count().saturating_sub(1)
    } else {
        s.count()
    };
    let back = State::new(READY, pos, 0, count).with_stale(s.stale());
    // Release: our reads of the payload happen before another consumer claims it (and before
    // the free that follows its ack). Acquire on failure: a take-back's bit is visible.
    let handed_back = state_of(c, pos)
        .compare_exchange(s.0, back.0, Ordering::Release, Ordering::Acquire)
        .is_ok();
    if last_view && (!handed_back || s.stale()) {
        // Registered as a reader by a take-back (of this or an older delivery): we no longer
        // read it. (A READY state is never freed here.)
        release_stale(c, pos, me);
    }
    if handed_back {
        Ok(())
    } else {
        Err(Expired)
    }
}

// ---------------------------------------------------------------------------------------------
// Consumers: behind the cursor (scans, under the claim lock).

/// What a scan finds in the slot of a position behind the delivery cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behind {
    /// Handed back: [`claim`] it again.
    Ready(State),
    /// A delivery (TAKEN or OPEN) by consumer `s.owner()`: [`take_back`] it if its deadline
    /// passed ([`expired`]) or its owner is dead.
    Delivered(State),
    /// Given up behind the cursor: [`pass`] it.
    Skipped(State),
    /// Acknowledged with stale readers left ([`stale_readers`]; dead ones are let go with
    /// [`release_stale`]).
    Acked,
    /// Nothing to do (another lap, free, garbage).
    Nothing,
}

/// Looks at the slot of position `pos`, behind the delivery cursor.
#[inline]
pub fn behind(c: &impl Cells, pos: u64) -> Behind {
    // Acquire: a READY state handed back by a nack or a reclaim is read before its payload.
    let s = State(state_of(c, pos).load(Ordering::Acquire));
    if !s.is_for(pos) {
        return Behind::Nothing;
    }
    match s.kind() {
        READY => Behind::Ready(s),
        TAKEN | OPEN => Behind::Delivered(s),
        SKIP => Behind::Skipped(s),
        ACKED if s.stale() => Behind::Acked,
        _ => Behind::Nothing,
    }
}

/// Whether the delivery in the slot of `pos` is past its deadline at `now`. The caller holds
/// the claim lock.
pub fn expired(c: &impl Cells, pos: u64, now: u64) -> bool {
    // Relaxed: written under the claim lock we hold.
    c.deadline(slot_of(c, pos)).load(Ordering::Relaxed) <= now
}

/// Takes delivery `s` of `pos` back into the queue (its deadline passed, or its owner is dead:
/// `owner_dead`). A live owner that opened it may be reading it: it is registered as a stale
/// reader first (invariant 4). Returns the READY state to claim again, or `None` if the owner
/// acknowledged or handed it back first. The caller holds the claim lock.
pub fn take_back(c: &impl Cells, pos: u64, s: State, owner_dead: bool) -> Option<State> {
    let slot = slot_of(c, pos);
    let o = s.owner();
    let reader = s.kind() == OPEN && !owner_dead;
    let b = bit(o);
    // Relaxed: ordered before the owner's view of the taken-back word by our Release CAS below
    // (the owner's failed CAS Acquires it). Only claim-lock holders set bits.
    let set_here = reader && b != 0 && c.stale(slot).fetch_or(b, Ordering::Relaxed) & b == 0;
    let back = s.back().with_stale(reader || s.stale());
    // AcqRel: Release publishes our bit with the taken-back word (invariant 4); one word
    // decides between this and the owner's ack or nack (invariant 2).
    if c.state(slot)
        .compare_exchange(s.0, back.0, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
    {
        if owner_dead {
            // A dead reader reads nothing: its bit goes (a stray bit would pin the slot in a
            // later lap). The word is READY, so this frees nothing.
            release_stale(c, pos, o);
        }
        Some(back)
    } else {
        if set_here {
            // The owner acknowledged or handed it back first: undo our bit (and free the slot
            // if that was the last reader of an acknowledged one).
            release_stale(c, pos, o);
        }
        None
    }
}

/// The stale readers registered on the slot of `pos`.
pub fn stale_readers(c: &impl Cells, pos: u64) -> u64 {
    // Acquire: as in `release_stale`.
    c.stale(slot_of(c, pos)).load(Ordering::Acquire)
}

/// Consumer `o` no longer reads the slot of `pos` (it let go of a delivery it lost, or died):
/// clears its reader bit, and frees the slot if it holds an acknowledged message of `pos`
/// nobody else reads (the reader's side of the free race). Returns true if it freed the slot.
pub fn release_stale(c: &impl Cells, pos: u64, o: usize) -> bool {
    let b = bit(o);
    if b == 0 {
        return false;
    }
    let slot = slot_of(c, pos);
    let word = c.stale(slot);
    // Relaxed: our own bit, set before the take-back that our caller observed (with Acquire).
    if word.load(Ordering::Relaxed) & b == 0 {
        return false;
    }
    // AcqRel, the reader's side of the free race (see the file doc): Release, so our reads of
    // the payload happen before the free by an acknowledger that reads our clear; Acquire, so
    // an acknowledger's CAS to ACKED before its own read-modify-write of this word (which ours
    // then follows) is visible to the load below.
    let left = word.fetch_and(!b, Ordering::AcqRel) & !b;
    let acked = State::new(ACKED, pos, 0, 0).with_stale(true);
    // Acquire: pairs with the acknowledger's Release CAS, so its reads happen before our free.
    left == 0 && c.state(slot).load(Ordering::Acquire) == acked.0 && free_acked(c, slot, acked)
}

/// Frees acknowledged slot `slot` (state `s`, ACKED) for its next lap; true if this call did.
fn free_acked(c: &impl Cells, slot: usize, s: State) -> bool {
    // AcqRel: Release, every reader's use of the payload (ordered before us by our Acquire
    // loads) happens before the next producer's write (its Acquire load of FREE).
    c.state(slot)
        .compare_exchange(
            s.0,
            s.next_lap(c.mask() + 1).0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .is_ok()
}

/// Consumer `o`'s bit in a stale bitmap (0 for an owner that cannot be).
#[inline]
fn bit(o: usize) -> u64 {
    if o < MAX_OWNERS {
        1 << o
    } else {
        0
    }
}

/// Consumer `o` is dead (its entry is being reclaimed): in `slot`, a delivery it held goes
/// back to the queue (count kept: a delivery to a consumer that died counts), and it stops
/// counting as a stale reader (freeing an acknowledged slot it was the last reader of).
/// Returns (handed back, freed).
pub fn consumer_died(c: &impl Cells, slot: usize, o: usize) -> (bool, bool) {
    let state = c.state(slot);
    // Acquire: as in `behind`.
    let s = State(state.load(Ordering::Acquire));
    let mut returned = false;
    if s.is_delivered() && s.owner() == o {
        // AcqRel: as in `take_back` (one word decides between this and anything else).
        returned = state
            .compare_exchange(s.0, s.back().0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
    }
    // Then its reader bit (a claimer that judged the owner alive may have set it meanwhile:
    // the bit is handled after, with a fresh look at the state).
    let b = bit(o);
    let word = c.stale(slot);
    // Relaxed: a hint; the fetch_and below decides.
    if b == 0 || word.load(Ordering::Relaxed) & b == 0 {
        return (returned, false);
    }
    // AcqRel, then Acquire: the reader's side of the free race, as in `release_stale` (for
    // whatever lap the slot holds).
    let left = word.fetch_and(!b, Ordering::AcqRel) & !b;
    let now = State(state.load(Ordering::Acquire));
    let freed = left == 0 && now.kind() == ACKED && now.stale() && free_acked(c, slot, now);
    (returned, freed)
}

/// Whether position `pos` is done with (its slot freed for a later lap, or reused since): the
/// head may pass it. A hint (Relaxed).
#[inline]
pub fn done_with(c: &impl Cells, pos: u64) -> bool {
    // Relaxed: the state only says whether position `pos` is done with; nothing is read on the
    // strength of it.
    State(state_of(c, pos).load(Ordering::Relaxed)).is_after(pos)
}

/// Whether the message published at position `pos` has left the queue: acknowledged (its slot
/// ACKED, or freed for a later lap), or dropped or moved to the dead-letter queue (freed). Asked
/// by the producer that published `pos`, which therefore knows the slot held `pos` at least
/// until then; once the slot shows a later lap, `pos` is done with for good.
#[inline]
pub fn acknowledged(c: &impl Cells, pos: u64) -> bool {
    // Acquire: pairs with the Release of the acknowledgement, so a caller that sees it
    // acknowledged also sees what the acknowledger wrote before (nothing it reads today; kept
    // so that a confirmation always happens after the acknowledgement it reports).
    let s = State(state_of(c, pos).load(Ordering::Acquire));
    s.is_after(pos) || (s.is_for(pos) && s.kind() == ACKED)
}

// ---------------------------------------------------------------------------------------------
// Recovery (no participant alive; the caller holds the segment lock).

/// What recovery finds in the slot of a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Freed for (or reused by) a later lap: done with.
    Later,
    /// Free for this position's lap: never reserved.
    Unused,
    /// Reserved, never published.
    Writing,
    /// Waiting for delivery or delivered (READY, TAKEN, OPEN), `count` deliveries so far.
    Waiting {
        /// Deliveries so far.
        count: u32,
    },
    /// Acknowledged (stale readers were left).
    Acked,
    /// Given up.
    Skipped,
    /// Another lap before this one, or no kind: garbage.
    Garbage,
}

/// Reads what the slot of `pos` holds for recovery. With no participant alive.
pub fn recorded(c: &impl Cells, pos: u64) -> Recorded {
    // Relaxed: under the segment lock with no participant alive.
    let s = State(state_of(c, pos).load(Ordering::Relaxed));
    if s.is_after(pos) {
        return Recorded::Later;
    }
    if !s.is_for(pos) {
        return Recorded::Garbage;
    }
    match s.kind() {
        FREE => Recorded::Unused,
        WRITING => Recorded::Writing,
        READY | TAKEN | OPEN => Recorded::Waiting { count: s.count() },
        ACKED => Recorded::Acked,
        SKIP => Recorded::Skipped,
        _ => Recorded::Garbage,
    }
}

/// What recovery makes of a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// Waiting for delivery (READY), `count` deliveries so far.
    Waiting(u32),
    /// Given up (SKIP): never delivered, passed by the cursor or a scan.
    GivenUp,
    /// Done with: the slot is free for the next lap.
    Done,
    /// Not reserved yet: the slot is free for this position's lap.
    Unused,
}

/// Sets the slot of `pos` to `to`, with no stale reader. Only with no participant alive (or
/// before the ring is published): a plain store (invariant 1).
pub fn reset(c: &impl Cells, pos: u64, to: Reset) {
    let n = c.mask() + 1;
    let s = match to {
        Reset::Waiting(count) => State::new(READY, pos, 0, count),
        Reset::GivenUp => State::new(SKIP, pos, 0, 0),
        Reset::Done => State::free(pos.wrapping_add(n)),
        Reset::Unused => State::free(pos),
    };
    let slot = slot_of(c, pos);
    // Relaxed: with no participant alive; the segment lock's release publishes it.
    c.state(slot).store(s.0, Ordering::Relaxed);
    c.stale(slot).store(0, Ordering::Relaxed);
}

/// Cells on the heap, for tests and loom models.
#[cfg(any(test, loom))]
pub mod model {
    use super::*;
    use crate::ring::words::{words, Words};

    /// A ring's cells as plain vectors.
    pub struct VecCells {
        /// slot count - 1
        pub mask: u64,
        /// state words
        pub states: Words,
        /// deadlines
        pub deadlines: Words,
        /// stale bitmaps
        pub stales: Words,
        /// tail
        pub tail: AtomicU64,
        /// producers' `writing` words
        pub writing: Words,
    }

    impl VecCells {
        /// A ring of `slots` slots and `producers` producers, every slot free for lap 0.
        pub fn new(slots: usize, producers: usize) -> VecCells {
            let c = VecCells {
                mask: slots as u64 - 1,
                states: words(slots, 0),
                deadlines: words(slots, 0),
                stales: words(slots, 0),
                tail: AtomicU64::new(0),
                writing: words(producers, 0),
            };
            init(&c);
            c
        }

        /// The state word of `slot`.
        pub fn word(&self, slot: usize) -> State {
            State(self.states[slot].load(Ordering::SeqCst))
        }
    }

    impl Cells for VecCells {
        fn mask(&self) -> u64 {
            self.mask
        }
        crate::ring::word_accessors! {
            tail;
            state => states, deadline => deadlines, stale => stales [slot];
        }
        fn writing(&self, p: usize) -> Option<&AtomicU64> {
            self.writing.get(p)
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::model::VecCells;
    use super::*;

    fn send(c: &VecCells, p: usize) -> u64 {
        let pos = reserve(c, p).expect("room");
        publish(c, pos, p).unwrap();
        pos
    }

    /// The published message at `pos`, as a consumer finds it at the cursor.
    fn ready_at(c: &VecCells, pos: u64) -> State {
        let AtCursor::Ready(s) = at_cursor(c, pos) else {
            panic!("no message ready at {pos}")
        };
        s
    }

    /// A ring of two slots where one message waits at the cursor, and its state.
    fn one_ready() -> (VecCells, State) {
        let c = VecCells::new(2, 1);
        send(&c, 0);
        let s = ready_at(&c, 0);
        (c, s)
    }

    #[test]
    fn encoding_keeps_every_field() {
        let s = State::new(OPEN, (1 << 40) + 5, 63, 4000).with_stale(true);
        assert_eq!(s.kind(), OPEN);
        assert_eq!(s.owner(), 63);
        assert_eq!(s.count(), 4000);
        assert!(s.stale());
        assert!(s.is_for(5) && s.is_for((1 << 40) + 5));
        assert!(s.is_after(4) && !s.is_after(5) && !s.is_after(6));
        assert_eq!(s.back(), State::new(READY, 5, 0, 4000).with_stale(true));
    }

    #[test]
    fn reserve_publish_claim_ack_frees_for_the_next_lap() {
        let c = VecCells::new(2, 1);
        assert_eq!(send(&c, 0), 0);
        assert_eq!(send(&c, 0), 1);
        assert_eq!(reserve(&c, 0), None, "full");
        let s = ready_at(&c, 0);
        let d = claim(&c, 0, s, 3, Claim::Take, 100);
        let d = open(&c, 0, d).unwrap();
        assert_eq!(d.count(), 1);
        assert_eq!(ack(&c, 0, d, 3, true), Ok(Acked::Freed));
        assert_eq!(ack(&c, 0, d, 3, true), Err(Expired), "at most once");
        assert_eq!(reserve(&c, 0), Some(2));
    }

    #[test]
    fn a_live_reader_keeps_a_taken_back_slot_until_it_lets_go() {
        let (c, s) = one_ready();
        let a = claim(&c, 0, s, 0, Claim::Open, 0);
        assert!(expired(&c, 0, 1));
        let Behind::Delivered(seen) = behind(&c, 0) else {
            panic!()
        };
        let back = take_back(&c, 0, seen, false).unwrap();
        assert!(back.stale() && back.count() == 1);
        assert_eq!(stale_readers(&c, 0), 1);
        let b = claim(&c, 0, back, 1, Claim::Open, 10);
        assert_eq!(b.count(), 2);
        assert_eq!(ack(&c, 0, b, 1, true), Ok(Acked::Held));
        assert_eq!(behind(&c, 0), Behind::Acked);
        send(&c, 0);
        assert_eq!(reserve(&c, 0), None, "slot 0 is still read");
        assert_eq!(ack(&c, 0, a, 0, true), Err(Expired));
        assert_eq!(stale_readers(&c, 0), 0);
        assert_eq!(reserve(&c, 0), Some(2));
    }

    #[test]
    fn nack_keeps_the_count_and_undo_takes_it_back() {
        let (c, s) = one_ready();
        let d = claim(&c, 0, s, 0, Claim::Take, 0);
        nack(&c, 0, d, 0, true, false).unwrap();
        let Behind::Ready(s) = behind(&c, 0) else {
            panic!()
        };
        assert_eq!(s.count(), 0);
        let d = claim(&c, 0, s, 0, Claim::Open, 0);
        nack(&c, 0, d, 0, false, true).unwrap();
        let Behind::Ready(s) = behind(&c, 0) else {
            panic!()
        };
        assert_eq!(s.count(), 1);
    }

    #[test]
    fn a_dead_producers_slot_is_skipped_and_a_dead_consumers_delivery_returned() {
        let c = VecCells::new(4, 2);
        let pos = reserve(&c, 1).unwrap();
        let AtCursor::Writing(s) = at_cursor(&c, pos) else {
            panic!()
        };
        assert!(!writer_gone(&c, pos, s, |_| true), "live and filling it");
        assert!(writer_gone(&c, pos, s, |_| false));
        producer_died(&c, 1);
        let AtCursor::Skipped(s) = at_cursor(&c, pos) else {
            panic!()
        };
        assert!(pass(&c, pos, s));
        assert_eq!(publish(&c, pos, 1), Err(PassedOver));
        let pos = send(&c, 0);
        let s = ready_at(&c, pos);
        claim(&c, pos, s, 5, Claim::Open, 0);
        assert_eq!(consumer_died(&c, pos as usize, 5), (true, false));
        assert!(matches!(behind(&c, pos), Behind::Ready(s) if s.count() == 1));
    }

    #[test]
    fn a_marked_slot_at_the_tail_is_passed() {
        let c = VecCells::new(4, 1);
        // A holder died after marking position 0 and before moving the tail.
        c.states[0].store(State::new(WRITING, 0, 0, 0).0, Ordering::SeqCst);
        assert_eq!(reserve(&c, 0), Some(1));
    }

    #[test]
    fn recovery_resets() {
        let c = VecCells::new(4, 1);
        send(&c, 0);
        assert_eq!(recorded(&c, 0), Recorded::Waiting { count: 0 });
        assert_eq!(recorded(&c, 1), Recorded::Unused);
        reset(&c, 0, Reset::Done);
        assert_eq!(recorded(&c, 0), Recorded::Later);
        assert_eq!(c.word(0), State::free(4));
        reset(&c, 1, Reset::GivenUp);
        assert_eq!(recorded(&c, 1), Recorded::Skipped);
        assert_eq!(recorded(&c, 5), Recorded::Garbage);
    }
}

#[cfg(loom)]
mod loom_tests {
    //! Each model is shown to fail when its key ordering or check is removed (the change and how
    //! it fails are written next to the model).
    //!
    //! Every thread of a model, the main one included, starts with [`Gate::pass`], a
    //! read-modify-write of one shared word. Loom 0.7's DPOR keeps only the last access to each
    //! atomic, so a thread that loads a word before storing it hides another thread's earlier
    //! load of it, and the schedules where the storing thread runs first are never explored
    //! (tokio-rs/loom#166, #392; found here when a model whose mutation had to fail passed after
    //! one execution). The gate's read-modify-writes are dependent on each other, so loom tries
    //! every order in which the threads start.

    use super::model::VecCells;
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;

    fn model(f: impl Fn() + Sync + Send + 'static) {
        crate::loom::model::builder(3).check(f);
    }

    /// The start gate (see the module doc).
    #[derive(Clone)]
    struct Gate(Arc<AtomicU64>);

    impl Gate {
        fn new() -> Gate {
            Gate(Arc::new(AtomicU64::new(0)))
        }
        fn pass(&self) {
            // Relaxed: only a scheduling point for loom; it orders nothing.
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One slot's payload: loom reports a data race if a producer writes it while a consumer
    /// reads it without a happens-before edge between them.
    type Payload = Arc<UnsafeCell<u64>>;

    fn write(p: &Payload, v: u64) {
        // SAFETY: loom checks that no other thread accesses the cell concurrently.
        p.with_mut(|x| unsafe { *x = v });
    }

    fn read(p: &Payload) -> u64 {
        // SAFETY: as in `write`.
        p.with(|x| unsafe { *x })
    }

    /// A ring of `slots` slots for `producers` producers, and a payload cell for its messages.
    fn ring(slots: usize, producers: usize) -> (Arc<VecCells>, Payload) {
        (
            Arc::new(VecCells::new(slots, producers)),
            Arc::new(UnsafeCell::new(0)),
        )
    }

    /// A ring of one slot holding message 100 at position 0, claimed OPEN by consumer 0.
    fn delivered() -> (Arc<VecCells>, Payload, State) {
        let (c, data) = ring(1, 1);
        let pos = reserve(&*c, 0).unwrap();
        write(&data, 100);
        publish(&*c, pos, 0).unwrap();
        let AtCursor::Ready(s) = at_cursor(&*c, 0) else {
            panic!()
        };
        let a = claim(&*c, 0, s, 0, Claim::Open, 0);
        (c, data, a)
    }

    /// The next lap's producer: reserves position 1 (the slot of position 0) if it was freed,
    /// within a few tries, and writes its payload.
    fn next_lap_producer(c: &VecCells, data: &Payload) {
        for _ in 0..2 {
            if let Some(pos) = reserve(c, 0) {
                write(data, 200);
                publish(c, pos, 0).unwrap();
                return;
            }
            loom::thread::yield_now();
        }
    }

    /// Consumer 0 holds delivery `a` (OPEN) of position 0 past its deadline and acknowledges
    /// (or hands back) it, while consumer 1, a claimer, takes it back and, if it did, claims,
    /// reads and acknowledges it; the next lap's producer waits for the slot. Checks: one end
    /// per delivery (invariant 2), the message acknowledged at most once and the slot freed once
    /// acknowledged, no reader bit left behind, and (loom's race check on the payload) the slot
    /// never reused while consumer 0 reads.
    fn ack_or_nack_vs_take_back(nack_it: bool) {
        model(move || {
            let gate = Gate::new();
            let (c, data, a) = delivered();
            let (c1, d1, g1) = (c.clone(), data.clone(), gate.clone());
            let owner = loom::thread::spawn(move || {
                g1.pass();
                assert_eq!(read(&d1), 100);
                if nack_it {
                    nack(&*c1, 0, a, 0, false, true).is_ok()
                } else {
                    ack(&*c1, 0, a, 0, true).is_ok()
                }
            });
            let (c2, d2, g2) = (c.clone(), data.clone(), gate.clone());
            let claimer = loom::thread::spawn(move || {
                g2.pass();
                let again = match behind(&*c2, 0) {
                    Behind::Delivered(s) if expired(&*c2, 0, 1) => take_back(&*c2, 0, s, false),
                    Behind::Ready(s) => Some(s),
                    _ => None,
                };
                let Some(s) = again else {
                    return (false, false);
                };
                let b = claim(&*c2, 0, s, 1, Claim::Open, 10);
                assert_eq!(read(&d2), 100);
                (true, ack(&*c2, 0, b, 1, true).is_ok())
            });
            gate.pass();
            next_lap_producer(&c, &data);
            let owner_ok = owner.join().unwrap();
            let (claimed, claimer_acked) = claimer.join().unwrap();
            assert_eq!(
                c.stales[0].load(Ordering::SeqCst),
                0,
                "a reader bit left behind"
            );
            let end = c.word(0);
            if nack_it {
                if claimed {
                    assert!(claimer_acked);
                    assert!(end.is_after(0), "acknowledged, not freed: {end:?}");
                } else {
                    assert!(owner_ok);
                    assert_eq!(end, State::new(READY, 0, 0, 1));
                }
            } else {
                assert!(owner_ok != claimer_acked, "acknowledged twice or never");
                assert!(!(owner_ok && claimed), "an acked delivery was taken back");
                assert!(end.is_after(0), "acknowledged, not freed: {end:?}");
            }
        });
    }

    /// Ack against take-back (see `ack_or_nack_vs_take_back`).
    ///
    /// Fails when `take_back` does not register the owner as a reader (`reader` forced to
    /// false): consumer 1's ack then frees the slot while consumer 0 still reads it, and loom
    /// reports "Causality violation: Concurrent read and write accesses to `UnsafeCell`"
    /// between consumer 0's read and the next lap's write. Also fails when `claim` stores its
    /// word with Relaxed instead of Release: consumer 0's failed CAS reads consumer 1's claim
    /// word, which then no longer carries the take-back's reader bit to it (C++20 release
    /// sequences continue only through read-modify-writes), consumer 0 does not clear its bit,
    /// and "a reader bit left behind" fires.
    #[test]
    fn ack_vs_take_back() {
        ack_or_nack_vs_take_back(false);
    }

    /// Nack against take-back (see `ack_or_nack_vs_take_back`): the nack's CAS loses to the
    /// take-back or wins over it, and the message is then delivered again.
    ///
    /// Fails when `nack` keeps its reader bit after its CAS failed (the condition
    /// `last_view && (!handed_back || s.stale())` reduced to `last_view && s.stale()`):
    /// consumer 1's ack leaves the slot ACKED for a reader that no longer reads, and "a reader
    /// bit left behind" fires.
    #[test]
    fn nack_vs_take_back() {
        ack_or_nack_vs_take_back(true);
    }

    /// The free race (invariant 4): consumer 0 lost its OPEN delivery of position 0 to a
    /// take-back while reading it (its bit is set); consumer 1 got it again. Consumer 0 lets go
    /// (its ack fails, it releases its bit) while consumer 1 acknowledges; the next lap's
    /// producer waits for the slot. Checks: the slot is freed by one of them (never left
    /// ACKED), and never while either still reads it (loom's race check on the payload).
    ///
    /// Fails when `ack` reads the stale bitmap with a load instead of its read-modify-write
    /// (`fetch_and(keep, AcqRel)` replaced by `load(Acquire)`): loom finds the store-buffer
    /// outcome where consumer 1 reads the bit still set and consumer 0 reads the state not yet
    /// ACKED; nobody frees and "left ACKED" fires. Also fails when `ack` frees without checking
    /// that the bitmap is empty (`left == 0` dropped): the next lap's write then races with
    /// consumer 0's read ("Causality violation").
    #[test]
    fn stale_reader_free_race() {
        model(|| {
            let gate = Gate::new();
            let (c, data, a) = delivered();
            let Behind::Delivered(seen) = behind(&*c, 0) else {
                panic!()
            };
            let back = take_back(&*c, 0, seen, false).unwrap();
            let b = claim(&*c, 0, back, 1, Claim::Open, 10);
            let (c1, d1, g1) = (c.clone(), data.clone(), gate.clone());
            let stale = loom::thread::spawn(move || {
                g1.pass();
                assert_eq!(read(&d1), 100);
                assert_eq!(ack(&*c1, 0, a, 0, true), Err(Expired));
            });
            let (c2, d2, g2) = (c.clone(), data.clone(), gate.clone());
            let acker = loom::thread::spawn(move || {
                g2.pass();
                assert_eq!(read(&d2), 100);
                assert!(ack(&*c2, 0, b, 1, true).is_ok());
            });
            gate.pass();
            next_lap_producer(&c, &data);
            stale.join().unwrap();
            acker.join().unwrap();
            let end = c.word(0);
            assert!(end.is_after(0), "left ACKED: {end:?}");
        });
    }

    /// A live producer that fills position 0 slowly is never passed over (invariant 5): a
    /// consumer at the cursor that sees WRITING judges it by its `writing` word (it is alive);
    /// the producer's publish must succeed, and the consumer reads the message whole.
    ///
    /// Fails when `reserve` stores WRITING with Relaxed instead of Release: the consumer can
    /// see WRITING(0, 0) with the producer's `writing` word still 0, judge it gone and pass
    /// the position; the producer's publish then fails ("a live producer was passed over").
    #[test]
    fn live_producer_is_never_passed_over() {
        model(|| {
            let gate = Gate::new();
            let (c, data) = ring(1, 1);
            let (c1, d1, g1) = (c.clone(), data.clone(), gate.clone());
            let producer = loom::thread::spawn(move || {
                g1.pass();
                let pos = reserve(&*c1, 0).unwrap();
                write(&d1, 7);
                assert_eq!(
                    publish(&*c1, pos, 0),
                    Ok(()),
                    "a live producer was passed over"
                );
            });
            gate.pass();
            for _ in 0..2 {
                match at_cursor(&*c, 0) {
                    AtCursor::Writing(s) if writer_gone(&*c, 0, s, |_| true) => {
                        pass(&*c, 0, s);
                    }
                    AtCursor::Ready(s) => {
                        claim(&*c, 0, s, 0, Claim::Open, 0);
                        assert_eq!(read(&data), 7);
                        break;
                    }
                    _ => loom::thread::yield_now(),
                }
            }
            producer.join().unwrap();
        });
    }

    /// Dead-producer skip: producer 0 died after reserving position 0 (WRITING, its `writing`
    /// word naming it). Its reclaimer gives the position up while a consumer at the cursor,
    /// judging it gone, passes it, and producer 1 of the next lap reserves and publishes
    /// position 1 in the same slot. Checks: producer 1's reservation is never overwritten (its
    /// publish succeeds and its message stays, READY or claimed), and the consumer reads it
    /// whole.
    ///
    /// Fails when `producer_died` stores SKIP instead of a CAS from the exact WRITING(0, 0)
    /// word: a reclaimer that runs after the consumer freed the slot and producer 1 reserved it
    /// overwrites WRITING(1, 1) or READY(1) with SKIP(0) ("the next lap's reservation was
    /// overwritten" or "the next lap's message was lost").
    #[test]
    fn dead_producer_skip() {
        model(|| {
            let gate = Gate::new();
            let (c, data) = ring(1, 2);
            assert_eq!(reserve(&*c, 0), Some(0));
            let published = Arc::new(AtomicBool::new(false));
            let (c1, g1) = (c.clone(), gate.clone());
            let reclaimer = loom::thread::spawn(move || {
                g1.pass();
                producer_died(&*c1, 0);
            });
            let (c2, d2, p2, g2) = (c.clone(), data.clone(), published.clone(), gate.clone());
            let producer = loom::thread::spawn(move || {
                g2.pass();
                for _ in 0..2 {
                    if let Some(pos) = reserve(&*c2, 1) {
                        write(&d2, 201);
                        assert_eq!(
                            publish(&*c2, pos, 1),
                            Ok(()),
                            "the next lap's reservation was overwritten"
                        );
                        p2.store(true, Ordering::SeqCst);
                        return;
                    }
                    loom::thread::yield_now();
                }
            });
            gate.pass();
            let mut cursor = 0;
            for _ in 0..3 {
                match at_cursor(&*c, cursor) {
                    AtCursor::Writing(s) if cursor == 0 && writer_gone(&*c, 0, s, |_| false) => {
                        if pass(&*c, 0, s) {
                            cursor = 1;
                        }
                    }
                    AtCursor::Skipped(s) => {
                        if pass(&*c, cursor, s) {
                            cursor += 1;
                        }
                    }
                    AtCursor::Ready(s) => {
                        claim(&*c, cursor, s, 0, Claim::Open, 0);
                        assert_eq!(read(&data), 201);
                        break;
                    }
                    AtCursor::Done => cursor += 1,
                    _ => loom::thread::yield_now(),
                }
            }
            reclaimer.join().unwrap();
            producer.join().unwrap();
            if published.load(Ordering::SeqCst) {
                let end = c.word(0);
                assert!(
                    end.is_for(1) && matches!(end.kind(), READY | OPEN),
                    "the next lap's message was lost: {end:?}"
                );
            }
        });
    }
}
