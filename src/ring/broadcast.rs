//! A single-writer broadcast ring with in-place reads and pinned slots.
//!
//! One writer publishes into `N` slots (a power of two); any number of readers (up to 64) read every
//! slot in place. Positions are dense `u64`s: position `q` lives in slot `q % N`.
//!
//! # Cells
//! - `stamp[slot]`: `pos << 2 | state`, state one of [`EMPTY`], [`WRITING`], [`COMMITTED`],
//!   [`SKIPPED`]. Written only by the writer. It sits in the same cache line as the start of the
//!   payload, so a small message costs one line transfer.
//! - `seq[slot]`: the message number (dense over committed messages, not over skips).
//! - `tail`: the next position the writer will fill. Read by readers only to resync or to join.
//! - `cursor[r]`: the next position reader `r` will read. Written only by reader `r`.
//! - `held[r][h]`: positions reader `r` is reading in place ("pins"), or [`NONE`].
//! - `active`: bitmap of registered readers; `roster`: bumped on every join and leave.
//!
//! # Invariants
//! 1. A slot is written only by the writer, and only between its `WRITING` and `COMMITTED` stamps.
//!    A reader uses a slot's bytes only after it saw `COMMITTED(q)`, pinned `q`, and saw the stamp
//!    still `COMMITTED(q)` after the pin.
//! 2. The writer never writes a slot whose payload a reader has pinned: after storing `WRITING(q)`
//!    it checks every active reader's pins for any position of slot `q % N` (`q - N`, or an older
//!    one whose payload is still there because later laps skipped the slot); if pinned it stores
//!    `SKIPPED(q)` (payload untouched) and moves on to `q + 1`.
//! 3. A reader advances `cursor` only past positions it has read, skipped, or lost; it pins only
//!    the position equal to its cursor. So once the writer has seen `cursor[r] > q - N` together
//!    with a pin set that has no position of slot `q % N`, reader `r` cannot pin that slot's
//!    payload while the writer holds it: the writer may cache that.
//! 4. A joining reader starts no earlier than `tail + 2 - N`, `tail` read after its join is
//!    visible and fenced ([`Reader::joined`]): the writer overwrites no position from there on
//!    without having seen the reader, so a reader is only ever lapped (and told of losses) by a
//!    writer that saw it and chose to (`DropOldest`), never because it joined during a write.
//! 5. The ring is unwritable ([`Claim::AllPinned`]) only when every slot is pinned at one moment.
//!    Pins move while the writer skips (a reader lets one go and pins the next message), so a
//!    whole lap of skips alone proves nothing; after one, the writer reads every pin afresh and
//!    goes on unless they cover every slot. It cannot skip for ever: skipped positions are no
//!    messages, so readers can only pin positions committed before it started, and each
//!    reader's pins only move forward through those.
//!
//! # Memory ordering
//! - Pinning is a store-buffer (Dekker) pattern, closed by one `fence(SeqCst)` on each side: the
//!   reader stores `held = q` (and its cursor), fences, reloads the stamp; the writer stores
//!   `WRITING(q + N)`, fences, loads `held`. The fences are totally ordered, so one side sees the
//!   other's store: either the writer sees the pin (and skips), or the reader sees `WRITING` (and
//!   gives the slot up before touching the payload). (Fences rather than SeqCst accesses: the same
//!   cost on x86, and loom checks fences exactly while it weakens SeqCst accesses to AcqRel.)
//! - `roster` and `active` are loaded after the writer's fence, so a reader that joined (bumping
//!   `roster` before its first pin's fence) either is seen, or has its first pin fail as above; a
//!   cached snapshot is dropped when `roster` moved.
//! - `COMMITTED` is stored with Release: it publishes the payload to a reader's Acquire load of
//!   the stamp. The topic layer then fences and loads its sleepers word: a second Dekker pair
//!   against a reader that announces sleep, fences and rechecks the stamp.
//! - A cursor store is not fenced on its own: the reader's next fence (its next pin, or the topic
//!   layer's fence when it finds nothing) orders it before the reader's check of the writers'
//!   "waiting for room" word. A writer that announced it waits and fenced either sees the cursor,
//!   or is seen (and woken) at a later check (the topic layer checks once per batch of reads and
//!   whenever it finds nothing); it also rechecks on a timeout.
//! - Unpin stores `NONE` with Release: the reader's reads of the payload happen before the writer,
//!   having loaded `NONE` with Acquire, reuses the slot.
//!
//! # Crashes
//! A writer that dies leaves at most one slot at `WRITING`: it is never `COMMITTED`, so no reader
//! reads it (no torn message). A new writer adopting the ring resumes at the first position that is
//! not `COMMITTED`/`SKIPPED`. A reader that dies leaves pins and a cursor: whoever reclaims it clears
//! them and bumps `roster`.

use crate::loom::atomic::{fence, AtomicU64, Ordering};

/// Stamp state: never written.
pub const EMPTY: u64 = 0;
/// Stamp state: the writer owns the slot.
pub const WRITING: u64 = 1;
/// Stamp state: the message is complete and readable.
pub const COMMITTED: u64 = 2;
/// Stamp state: no message at this position (the slot was pinned or the loan abandoned).
pub const SKIPPED: u64 = 3;
/// No position (an empty pin).
pub const NONE: u64 = u64::MAX;
/// Most pins one reader may hold in one ring.
pub const MAX_HELD: usize = 6;
/// Most readers of one ring (one bit each in `active`).
pub const MAX_READERS: usize = 64;
/// Largest position a stamp can hold (62 bits), less a margin; a larger `tail` is corrupt.
pub const MAX_POSITION: u64 = (1 << 61) - 1;

/// Packs a stamp.
#[inline]
pub fn stamp(pos: u64, state: u64) -> u64 {
    (pos << 2) | state
}

#[inline]
fn stamp_pos(s: u64) -> u64 {
    s >> 2
}

#[inline]
fn stamp_state(s: u64) -> u64 {
    s & 3
}

/// The atomic cells of one ring, wherever they live.
pub trait Cells {
    /// `N - 1`, where `N` (the slot count) is a power of two.
    fn mask(&self) -> u64;
    /// Stamp word of `slot`.
    fn stamp(&self, slot: usize) -> &AtomicU64;
    /// Message number word of `slot`.
    fn seq(&self, slot: usize) -> &AtomicU64;
    /// The writer's next position.
    fn tail(&self) -> &AtomicU64;
    /// The writer's committed message count (next message number).
    fn msgs(&self) -> &AtomicU64;
    /// Bitmap of registered readers.
    fn active(&self) -> &AtomicU64;
    /// Bumped on every join and leave.
    fn roster(&self) -> &AtomicU64;
    /// Next position of reader `r`.
    fn cursor(&self, r: usize) -> &AtomicU64;
    /// Pin `h` of reader `r`.
    fn held(&self, r: usize, h: usize) -> &AtomicU64;
    /// Pins per reader (≤ [`MAX_HELD`]).
    fn max_held(&self) -> usize;
}

/// What the writer knows of one reader, from a past read of its cursor and pins.
#[derive(Clone, Copy)]
struct Snapshot {
    cursor: u64,
    held: [u64; MAX_HELD],
}

const STALE: Snapshot = Snapshot {
    cursor: 0,
    held: [NONE; MAX_HELD],
};

/// The active readers the writer keeps snapshots for (bits of the `active` bitmap below the
/// snapshot count), lowest first: what every scan of the roster walks.
struct ActiveReaders {
    bits: u64,
    len: usize,
}

impl Iterator for ActiveReaders {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.bits != 0 {
            let r = self.bits.trailing_zeros() as usize;
            self.bits &= self.bits - 1;
            if r < self.len {
                return Some(r);
            }
        }
        None
    }
}

/// Outcome of [`Writer::claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The slot is the writer's to fill; commit or abandon it next.
    Ready {
        /// Position claimed.
        pos: u64,
        /// Slot index.
        slot: usize,
    },
    /// `block` was asked and reader `reader` has not yet read the position this slot holds.
    Blocked {
        /// The lagging reader.
        reader: usize,
    },
    /// Every slot is pinned (only possible if readers × pins ≥ slots).
    AllPinned,
}

/// The writer's private state. One per ring, in one thread at a time.
pub struct Writer {
    next: u64,
    msgs: u64,
    roster: u64,
    snaps: Box<[Snapshot]>,
    /// A slot already claimed (stamped `WRITING`, pins checked) by the last commit.
    claimed: Option<(u64, usize)>,
}

impl Writer {
    /// Takes over a ring: resumes after the last committed or skipped position, so a predecessor
    /// that died between its stamp and its `tail` store is not overwritten.
    pub fn adopt(c: &impl Cells, readers: usize) -> Writer {
        // Acquire: pairs with the Release stores of the previous writer.
        let mut next = c.tail().load(Ordering::Acquire);
        if next > MAX_POSITION {
            // Only a corrupt segment gets here; start over rather than overflow stamps.
            next = 0;
        }
        // Relaxed: ordered after the Acquire load of tail, which the writer stores after msgs.
        let mut msgs = c.msgs().load(Ordering::Relaxed);
        // At most one lap: a dead writer leaves at most a few finished slots past `tail`.
        for _ in 0..=c.mask() {
            let slot = (next & c.mask()) as usize;
            let s = c.stamp(slot).load(Ordering::Acquire);
            if stamp_pos(s) != next || !matches!(stamp_state(s), COMMITTED | SKIPPED) {
                break;
            }
            if stamp_state(s) == COMMITTED {
                // Relaxed: the dead writer's seq store preceded its Release stamp store, which
                // we loaded with Acquire.
                msgs = c.seq(slot).load(Ordering::Relaxed).wrapping_add(1);
            }
            next += 1;
        }
        Writer {
            next,
            msgs,
            roster: u64::MAX,
            snaps: vec![STALE; readers.min(MAX_READERS)].into_boxed_slice(),
            claimed: None,
        }
    }

    /// Next position to be claimed.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Whether the next slot is already claimed (the last commit found it free).
    pub fn has_claim(&self) -> bool {
        self.claimed.is_some()
    }

    /// Messages committed so far (the next message number).
    pub fn messages(&self) -> u64 {
        self.msgs
    }

    /// Drops cached snapshots if readers joined or left since they were taken; returns the
    /// active readers this writer keeps snapshots for.
    #[inline]
    fn check_roster(&mut self, c: &impl Cells) -> ActiveReaders {
        // Acquire: after the writer's fence (pin handshake); pairs with the joiner's bump.
        let roster = c.roster().load(Ordering::Acquire);
        if roster != self.roster {
            self.roster = roster;
            self.snaps.fill(STALE);
        }
        ActiveReaders {
            // Acquire: as roster.
            bits: c.active().load(Ordering::Acquire),
            len: self.snaps.len(),
        }
    }

    fn refresh(&mut self, c: &impl Cells, r: usize) -> &Snapshot {
        let s = &mut self.snaps[r];
        // Acquire: pairs with the reader's Release cursor store, which follows its pin store, so
        // the pins read below are at least as new as the cursor (invariant 3).
        s.cursor = c.cursor(r).load(Ordering::Acquire);
        for h in 0..c.max_held().min(MAX_HELD) {
            // Acquire: pairs with the reader's Release unpin; its payload reads are done.
            s.held[h] = c.held(r, h).load(Ordering::Acquire);
        }
        s
    }

    /// The first active reader that has not read position `p`, refreshing snapshots as needed.
    pub fn lagging_reader(&mut self, c: &impl Cells, p: u64) -> Option<usize> {
        self.check_roster(c)
            .find(|&r| self.snaps[r].cursor <= p && self.refresh(c, r).cursor <= p)
    }

    /// Whether some active reader pins the payload in the slot of position `p`: position `p`
    /// itself, or an older position of the same slot whose payload is still there because later
    /// laps skipped the slot. Must run after `WRITING` was stored and fenced.
    fn pinned(&mut self, c: &impl Cells, p: u64) -> bool {
        let mask = c.mask();
        let in_slot =
            |held: &[u64; MAX_HELD]| held.iter().any(|&h| h != NONE && h & mask == p & mask);
        for r in self.check_roster(c) {
            let s = &self.snaps[r];
            // Invariant 3: a snapshot past `p` without a pin in this slot stays true while we
            // hold the slot (the only newer position of it is the one we are writing).
            if s.cursor > p && !in_slot(&s.held) {
                continue;
            }
            if in_slot(&self.refresh(c, r).held) {
                return true;
            }
        }
        false
    }

    /// Whether every slot holds a position some active reader pins, read afresh now.
    #[cold]
    fn every_slot_pinned(&mut self, c: &impl Cells) -> bool {
        let n = c.mask() + 1;
        // At most 64 readers × MAX_HELD pins: far fewer slots than most rings have.
        let mut slots = [u64::MAX; 64 * MAX_HELD];
        let mut count = 0;
        for r in self.check_roster(c) {
            for &h in self.refresh(c, r).held.iter().filter(|&&h| h != NONE) {
                let slot = h & c.mask();
                if count < slots.len() && !slots[..count].contains(&slot) {
                    slots[count] = slot;
                    count += 1;
                }
            }
        }
        count as u64 >= n
    }

    /// Claims the next slot. With `block`, returns [`Claim::Blocked`] instead of overwriting a
    /// position an active reader has not read. Never overwrites a pinned position.
    pub fn claim(&mut self, c: &impl Cells, block: bool) -> Claim {
        if let Some((pos, slot)) = self.claimed.take() {
            return Claim::Ready { pos, slot };
        }
        let n = c.mask() + 1;
        let mut skipped = 0;
        loop {
            let q = self.next;
            let slot = (q & c.mask()) as usize;
            if q >= n && block {
                if let Some(reader) = self.lagging_reader(c, q - n) {
                    return Claim::Blocked { reader };
                }
            }
            // Relaxed + fence: the writer side of the pin handshake (invariant 2). In the first
            // lap no reader can hold the slot, so no fence is needed.
            c.stamp(slot).store(stamp(q, WRITING), Ordering::Relaxed);
            if q >= n {
                fence(Ordering::SeqCst);
            }
            if q >= n && self.pinned(c, q - n) {
                // Release: readers that see SKIPPED(q) see nothing else of ours; the payload is
                // untouched.
                c.stamp(slot).store(stamp(q, SKIPPED), Ordering::Release);
                self.next = q + 1;
                c.tail().store(self.next, Ordering::Release);
                skipped += 1;
                if skipped >= n {
                    // A lap of skips: but pins move while we skip (a reader lets one go and pins
                    // the next message), so a lap can be skipped over pins never held at once.
                    // Only slots pinned all at once now make the ring unwritable (invariant 5).
                    if self.every_slot_pinned(c) {
                        return Claim::AllPinned;
                    }
                    skipped = 0;
                }
                continue;
            }
            return Claim::Ready { pos: q, slot };
        }
    }

    /// Publishes the claimed slot as message number [`Writer::messages`], then claims the next
    /// slot ahead of time if every reader has read what it holds.
    ///
    /// One `fence(SeqCst)` serves both the pre-claim's pin handshake and the caller's sleepers
    /// handshake: `after_fence` runs right after it (before the pre-claim's pin check, so a wake-up
    /// it issues is not delayed by it), and may load the sleepers word with Relaxed.
    pub fn commit(&mut self, c: &impl Cells, pos: u64, slot: usize, after_fence: impl FnOnce()) {
        debug_assert_eq!(pos, self.next);
        // Relaxed: published by the Release stamp store below.
        c.seq(slot).store(self.msgs, Ordering::Relaxed);
        // Release: publishes the payload and seq to readers' Acquire stamp loads.
        c.stamp(slot)
            .store(stamp(pos, COMMITTED), Ordering::Release);
        // Wrapping: `msgs` may come from a corrupt segment; it must not panic.
        self.msgs = self.msgs.wrapping_add(1);
        self.next = pos + 1;
        // Relaxed: read only by a later writer, after its Acquire load of tail (stored below).
        c.msgs().store(self.msgs, Ordering::Relaxed);
        // Release: a reader that resyncs from `tail` sees the stamps before it.
        c.tail().store(self.next, Ordering::Release);
        // Pre-claim the next slot, so that the next send needs no fence of its own; only if every
        // reader has read what it holds, so an early claim never costs a reader a message (even
        // when the policy would let the writer overwrite it).
        let n = c.mask() + 1;
        let q = self.next;
        let next_slot = (q & c.mask()) as usize;
        let free = q < n || self.lagging_reader(c, q - n).is_none();
        if free {
            // Relaxed: ordered by the fence below (pin handshake, as in `claim`).
            c.stamp(next_slot)
                .store(stamp(q, WRITING), Ordering::Relaxed);
        }
        fence(Ordering::SeqCst);
        after_fence();
        if free {
            if q >= n && self.pinned(c, q - n) {
                // Release: as in `claim`'s skip. The next claim starts afresh after it.
                c.stamp(next_slot)
                    .store(stamp(q, SKIPPED), Ordering::Release);
                self.next = q + 1;
                c.tail().store(self.next, Ordering::Release);
            } else {
                self.claimed = Some((q, next_slot));
            }
        }
    }

    /// Gives a pre-claimed slot up (the writer is going away): readers see a skip.
    pub fn release_claim(&mut self, c: &impl Cells) {
        if let Some((pos, slot)) = self.claimed.take() {
            self.abandon(c, pos, slot);
        }
    }

    /// Gives the claimed slot up without a message.
    pub fn abandon(&mut self, c: &impl Cells, pos: u64, slot: usize) {
        debug_assert_eq!(pos, self.next);
        // Release: as in `claim`'s skip.
        c.stamp(slot).store(stamp(pos, SKIPPED), Ordering::Release);
        self.next = pos + 1;
        c.tail().store(self.next, Ordering::Release);
    }
}

/// Outcome of [`Reader::read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Nothing new.
    Empty,
    /// A message, pinned with pin index `h` until [`Reader::release`].
    Message {
        /// Its position.
        pos: u64,
        /// Its slot.
        slot: usize,
        /// Its message number.
        seq: u64,
        /// Messages lost since the previous one this reader got (overwritten before it read them).
        missed: u64,
    },
}

/// A reader's private state for one ring.
#[derive(Debug, Clone)]
pub struct Reader {
    next: u64,
    /// Message number of the next message, once one was read.
    expect: Option<u64>,
    /// Where this reader started, and whether the writer lapped it since: before its first
    /// message, losses are counted in positions (exact unless pinned slots were skipped there).
    start: u64,
    lapped: bool,
}

impl Reader {
    /// A reader starting `history` positions before the writer's tail (clamped to what the ring
    /// can promise: `N - 2`). Its cursor cell must be set to [`Reader::position`] before it
    /// joins (its `active` bit and `roster` bump), and [`Reader::joined`] called after.
    pub fn new(c: &impl Cells, history: u64) -> Reader {
        // Acquire: pairs with the writer's Release store of tail.
        let tail = c.tail().load(Ordering::Acquire).min(MAX_POSITION);
        let start = tail.saturating_sub(history.min(Self::promised(c)));
        Reader {
            next: start,
            expect: None,
            start,
            lapped: false,
        }
    }

    /// Positions before the writer's tail a joining reader can be sure to find intact (see
    /// [`Reader::joined`]).
    fn promised(c: &impl Cells) -> u64 {
        c.mask().saturating_sub(1)
    }

    /// Completes the join, once reader `r`'s cursor, `active` bit and `roster` bump are stored
    /// (invariant 4): moves the reader past every position the writer may overwrite without
    /// having seen it, so that what it reports lost was really promised to it.
    ///
    /// The writer decides to overwrite position `p - N` before its stamp `WRITING(p)` and the
    /// fence after it (the fence of the pin handshake). Our fence and the writer's are totally
    /// ordered. The writer's decisions after its first fence later than ours see our `active`
    /// bit and cursor (and wait for them under `Block`); of its decisions before that fence, the
    /// last is for one position past the `tail` stored before its previous fence, and `tail`
    /// read after our fence is at least that. So the writer overwrites, unseeing, no position
    /// at or past `tail + 2 - N`: we start there at the earliest.
    pub fn joined(&mut self, c: &impl Cells, r: usize) {
        fence(Ordering::SeqCst);
        // Acquire: pairs with the writer's Release store of tail.
        let tail = c.tail().load(Ordering::Acquire).min(MAX_POSITION);
        // tail + 2 - N, that is `promised` positions before the tail.
        let safe = tail.saturating_sub(Self::promised(c));
        if self.next < safe {
            self.start = safe;
            self.advance(c, r, safe);
        }
    }

    /// Next position this reader will read.
    pub fn position(&self) -> u64 {
        self.next
    }

    fn advance(&mut self, c: &impl Cells, r: usize, to: u64) {
        self.next = to;
        // Release: after the pin stores (invariant 3). A writer waiting for room is told by the
        // topic layer after this reader's next fence (module docs).
        c.cursor(r).store(to, Ordering::Release);
    }

    /// Reads the next message, pinning it with pin index `h` (which must be free, i.e. `NONE`).
    pub fn read(&mut self, c: &impl Cells, r: usize, h: usize) -> Read {
        // Bounded: a sane ring needs at most one pass over skipped slots plus a resync; corrupt
        // stamps must not keep a non-blocking call busy.
        for _ in 0..2 * (c.mask() + 2) {
            let q = self.next;
            let slot = (q & c.mask()) as usize;
            // Acquire: pairs with the writer's COMMITTED store; the payload is visible after it.
            let s = c.stamp(slot).load(Ordering::Acquire);
            let pos = stamp_pos(s);
            if pos < q || (pos == q && matches!(stamp_state(s), EMPTY | WRITING)) {
                return Read::Empty;
            }
            if pos == q && stamp_state(s) == SKIPPED {
                self.advance(c, r, q + 1);
                continue;
            }
            if pos == q {
                // The reader side of the pin handshake (invariant 1): pin, fence, recheck. The
                // fence also orders this reader's earlier cursor stores before its later loads
                // (the topic layer's room handshake relies on it).
                c.held(r, h).store(q, Ordering::Relaxed);
                fence(Ordering::SeqCst);
                if c.stamp(slot).load(Ordering::Acquire) != s {
                    // Release: nothing was read; kept uniform with `release`.
                    c.held(r, h).store(NONE, Ordering::Release);
                    // The writer took the slot back: the next round resyncs.
                    continue;
                }
                // Relaxed: written before the COMMITTED stamp we acquired, and stable while pinned.
                let seq = c.seq(slot).load(Ordering::Relaxed);
                let missed = match self.expect {
                    Some(e) => seq.saturating_sub(e),
                    None if self.lapped => q - self.start,
                    None => 0,
                };
                self.expect = Some(seq.wrapping_add(1));
                self.advance(c, r, q + 1);
                return Read::Message {
                    pos: q,
                    slot,
                    seq,
                    missed,
                };
            }
            // pos > q: the writer lapped this reader. Jump to the oldest position still intact:
            // the writer at `tail` may be overwriting `tail - N`, so `tail - N + 1`.
            // Acquire: pairs with the writer's Release store of tail.
            let tail = c.tail().load(Ordering::Acquire);
            let oldest = tail.max(pos).min(MAX_POSITION).saturating_sub(c.mask());
            self.lapped = true;
            self.advance(c, r, oldest.max(q.saturating_add(1)));
        }
        Read::Empty
    }

    /// Unpins pin `h`.
    pub fn release(c: &impl Cells, r: usize, h: usize) {
        // Release: our reads of the payload happen before the writer reuses the slot.
        c.held(r, h).store(NONE, Ordering::Release);
    }
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
        /// stamps
        pub stamps: Words,
        /// seqs
        pub seqs: Words,
        /// tail
        pub tail: AtomicU64,
        /// msgs
        pub msgs: AtomicU64,
        /// active bitmap
        pub active: AtomicU64,
        /// roster
        pub roster: AtomicU64,
        /// cursors
        pub cursors: Words,
        /// pins, reader-major
        pub held: Words,
        /// pins per reader
        pub max_held: usize,
    }

    impl VecCells {
        /// A ring of `slots` slots and `readers` readers (all inactive).
        pub fn new(slots: usize, readers: usize, max_held: usize) -> VecCells {
            VecCells {
                mask: slots as u64 - 1,
                stamps: words(slots, 0),
                seqs: words(slots, 0),
                tail: AtomicU64::new(0),
                msgs: AtomicU64::new(0),
                active: AtomicU64::new(0),
                roster: AtomicU64::new(0),
                cursors: words(readers, 0),
                held: words(readers * max_held, NONE),
                max_held,
            }
        }

        /// Registers reader `r` (test helper: cursor, then active bit and roster, then
        /// [`Reader::joined`]).
        pub fn join(&self, r: usize, history: u64) -> Reader {
            let mut reader = Reader::new(self, history);
            self.cursors[r].store(reader.position(), Ordering::SeqCst);
            self.active.fetch_or(1 << r, Ordering::SeqCst);
            self.roster.fetch_add(1, Ordering::SeqCst);
            reader.joined(self, r);
            reader
        }
    }

    impl Cells for VecCells {
        fn mask(&self) -> u64 {
            self.mask
        }
        crate::ring::word_accessors! {
            tail, msgs, active, roster;
            stamp => stamps, seq => seqs [slot];
            cursor => cursors [r];
        }
        fn held(&self, r: usize, h: usize) -> &AtomicU64 {
            &self.held[r * self.max_held + h]
        }
        fn max_held(&self) -> usize {
            self.max_held
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::model::VecCells;
    use super::*;

    fn publish(w: &mut Writer, c: &VecCells, block: bool) -> Claim {
        match w.claim(c, block) {
            Claim::Ready { pos, slot } => {
                w.commit(c, pos, slot, || {});
                Claim::Ready { pos, slot }
            }
            other => other,
        }
    }

    /// A ring of `slots` slots, its writer and one reader (joined at 0) with `max_held` pins.
    fn one_reader(slots: usize, max_held: usize) -> (VecCells, Reader, Writer) {
        let c = VecCells::new(slots, 1, max_held);
        let rd = c.join(0, 0);
        let w = Writer::adopt(&c, 1);
        (c, rd, w)
    }

    fn read_one(rd: &mut Reader, c: &VecCells) -> Read {
        let got = rd.read(c, 0, 0);
        if matches!(got, Read::Message { .. }) {
            Reader::release(c, 0, 0);
        }
        got
    }

    /// Cells that run `hook` once, the first time the writer stores `tail` after a skip: the
    /// moment between two of its pin checks.
    struct Hooked<'a> {
        cells: &'a VecCells,
        hook: std::cell::RefCell<Option<Box<dyn FnOnce() + 'a>>>,
    }

    impl Cells for Hooked<'_> {
        fn mask(&self) -> u64 {
            self.cells.mask()
        }
        fn stamp(&self, slot: usize) -> &AtomicU64 {
            self.cells.stamp(slot)
        }
        fn seq(&self, slot: usize) -> &AtomicU64 {
            self.cells.seq(slot)
        }
        fn tail(&self) -> &AtomicU64 {
            // The newest stamp is the position the writer is at.
            let newest = self.cells.stamps.iter().map(|s| s.load(Ordering::SeqCst));
            if newest.max().map(stamp_state) == Some(SKIPPED) {
                if let Some(hook) = self.hook.borrow_mut().take() {
                    hook();
                }
            }
            self.cells.tail()
        }
        fn msgs(&self) -> &AtomicU64 {
            self.cells.msgs()
        }
        fn active(&self) -> &AtomicU64 {
            self.cells.active()
        }
        fn roster(&self) -> &AtomicU64 {
            self.cells.roster()
        }
        fn cursor(&self, r: usize) -> &AtomicU64 {
            self.cells.cursor(r)
        }
        fn held(&self, r: usize, h: usize) -> &AtomicU64 {
            self.cells.held(r, h)
        }
        fn max_held(&self) -> usize {
            self.cells.max_held()
        }
    }

    /// One reader with one pin, two slots: it holds message 0 while the writer skips its slot,
    /// then lets it go and pins message 1 before the writer looks at the other slot. The writer
    /// skipped a whole lap, but never over two pins at once: the ring is writable, not
    /// `AllPinned` (invariant 5; the error showed as a flaky cross-process test).
    #[test]
    fn a_lap_skipped_over_pins_that_moved_is_not_all_pinned() {
        let (c, mut rd, mut w) = one_reader(2, 1);
        publish(&mut w, &c, true);
        publish(&mut w, &c, true);
        // Holds message 0 (cursor 1): the writer's position 2 must skip slot 0.
        assert!(matches!(rd.read(&c, 0, 0), Read::Message { seq: 0, .. }));
        let hooked = Hooked {
            cells: &c,
            hook: std::cell::RefCell::new(Some(Box::new(|| {
                Reader::release(&c, 0, 0);
                assert!(matches!(rd.read(&c, 0, 0), Read::Message { seq: 1, .. }));
            }))),
        };
        // Skips 2 (slot 0, pinned), then 3 (slot 1, now pinned), then writes 4 in slot 0.
        assert_eq!(w.claim(&hooked, false), Claim::Ready { pos: 4, slot: 0 });
    }

    /// Every slot pinned at once is still `AllPinned`.
    #[test]
    fn slots_pinned_at_once_are_all_pinned() {
        let c = VecCells::new(2, 2, 1);
        let mut a = c.join(0, 0);
        let mut b = c.join(1, 0);
        let mut w = Writer::adopt(&c, 2);
        publish(&mut w, &c, false);
        publish(&mut w, &c, false);
        assert!(matches!(a.read(&c, 0, 0), Read::Message { seq: 0, .. }));
        assert!(matches!(b.read(&c, 1, 0), Read::Message { seq: 0, .. }));
        Reader::release(&c, 1, 0);
        assert!(matches!(b.read(&c, 1, 0), Read::Message { seq: 1, .. }));
        assert_eq!(w.claim(&c, false), Claim::AllPinned);
    }

    #[test]
    fn in_order_then_empty() {
        let (c, mut rd, mut w) = one_reader(4, 2);
        for _ in 0..3 {
            publish(&mut w, &c, true);
        }
        for i in 0..3 {
            assert!(
                matches!(read_one(&mut rd, &c), Read::Message { seq, missed: 0, .. } if seq == i)
            );
        }
        assert_eq!(read_one(&mut rd, &c), Read::Empty);
    }

    #[test]
    fn block_stops_at_slowest_reader() {
        let (c, mut rd, mut w) = one_reader(4, 2);
        for _ in 0..4 {
            assert!(matches!(publish(&mut w, &c, true), Claim::Ready { .. }));
        }
        assert_eq!(w.claim(&c, true), Claim::Blocked { reader: 0 });
        assert!(matches!(
            read_one(&mut rd, &c),
            Read::Message { seq: 0, .. }
        ));
        assert!(matches!(
            publish(&mut w, &c, true),
            Claim::Ready { pos: 4, .. }
        ));
    }

    #[test]
    fn drop_oldest_counts_exactly() {
        let (c, mut rd, mut w) = one_reader(4, 2);
        assert!(matches!(read_one(&mut rd, &c), Read::Empty));
        publish(&mut w, &c, false);
        assert!(matches!(
            read_one(&mut rd, &c),
            Read::Message {
                seq: 0,
                missed: 0,
                ..
            }
        ));
        for _ in 0..10 {
            publish(&mut w, &c, false);
        }
        // Messages 1..=10 were sent; the ring keeps the newest 3 intact (7, 8, 9 are < tail - N + 1?)
        match read_one(&mut rd, &c) {
            Read::Message { seq, missed, .. } => {
                assert_eq!(missed, seq - 1, "everything between 0 and seq was lost");
                assert!(seq >= 7);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pinned_slot_is_skipped_not_overwritten() {
        let (c, mut rd, mut w) = one_reader(4, 2);
        publish(&mut w, &c, false); // pos 0 -> slot 0
        let Read::Message { slot: 0, .. } = rd.read(&c, 0, 0) else {
            panic!()
        };
        // Hold pin 0 on position 0; read positions 1..=3 with pin 1.
        for _ in 1..4 {
            publish(&mut w, &c, false);
            assert!(matches!(rd.read(&c, 0, 1), Read::Message { missed: 0, .. }));
            Reader::release(&c, 0, 1);
        }
        // pos 4 -> slot 0 is pinned: skipped, payload untouched; pos 5 -> slot 1.
        let claim = w.claim(&c, false);
        assert_eq!(claim, Claim::Ready { pos: 5, slot: 1 });
        assert_eq!(c.stamps[0].load(Ordering::SeqCst), stamp(4, SKIPPED));
        w.commit(&c, 5, 1, || {});
        Reader::release(&c, 0, 0);
        // The reader passes over the skip and gets message 4 with nothing missed.
        assert!(matches!(
            rd.read(&c, 0, 0),
            Read::Message {
                pos: 5,
                seq: 4,
                missed: 0,
                ..
            }
        ));
    }

    #[test]
    fn pinned_slot_survives_many_laps() {
        let (c, mut rd, mut w) = one_reader(4, 2);
        publish(&mut w, &c, false);
        let Read::Message { slot: 0, .. } = rd.read(&c, 0, 0) else {
            panic!()
        };
        // Many laps while position 0 stays pinned (DropOldest and Block alike, reading with pin 1).
        for block in [false, true] {
            for _ in 0..20 {
                assert!(
                    matches!(publish(&mut w, &c, block), Claim::Ready { slot, .. } if slot != 0)
                );
                while let Read::Message { slot, .. } = rd.read(&c, 0, 1) {
                    assert_ne!(slot, 0);
                    Reader::release(&c, 0, 1);
                }
            }
        }
        let s0 = c.stamps[0].load(Ordering::SeqCst);
        assert_eq!(s0 & 3, SKIPPED, "slot 0 was only ever skipped");
        Reader::release(&c, 0, 0);
        // Released: the writer uses slot 0 again.
        let mut used0 = false;
        for _ in 0..8 {
            if let Claim::Ready { slot, .. } = publish(&mut w, &c, false) {
                used0 |= slot == 0;
            }
        }
        assert!(used0);
    }

    #[test]
    fn adoption_resumes_after_committed() {
        let c = VecCells::new(4, 1, 2);
        let mut w = Writer::adopt(&c, 1);
        publish(&mut w, &c, false);
        // Simulate a writer that died after committing position 1 but before storing tail.
        let Claim::Ready { pos, slot } = w.claim(&c, false) else {
            panic!()
        };
        c.seqs[slot].store(1, Ordering::SeqCst);
        c.stamps[slot].store(stamp(pos, COMMITTED), Ordering::SeqCst);
        let w2 = Writer::adopt(&c, 1);
        assert_eq!(w2.next(), 2);
        assert_eq!(w2.messages(), 2);
    }

    #[test]
    fn late_reader_gets_history() {
        let c = VecCells::new(8, 1, 2);
        let mut w = Writer::adopt(&c, 1);
        for _ in 0..20 {
            publish(&mut w, &c, false);
        }
        let mut rd = c.join(0, 3);
        let mut got = vec![];
        while let Read::Message { seq, .. } = read_one(&mut rd, &c) {
            got.push(seq);
        }
        assert_eq!(got, vec![17, 18, 19]);
    }
}

#[cfg(loom)]
mod loom_tests {
    use super::model::VecCells;
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;

    /// The writer laps a reader that pins a slot: loom explores every interleaving and fails on a
    /// data race if the writer ever writes a payload the reader is reading.
    fn model(f: impl Fn() + Sync + Send + 'static) {
        // Bounded preemptions keep the search to seconds; the handshakes need at most two.
        crate::loom::model::builder(3).check(f);
    }

    /// A `Block` writer's thread: adopts the ring and commits `count` messages, yielding while
    /// blocked.
    fn send_blocking(c: &VecCells, count: u64) {
        let mut w = Writer::adopt(c, 1);
        let mut sent = 0;
        while sent < count {
            match w.claim(c, true) {
                Claim::Ready { pos, slot } => {
                    w.commit(c, pos, slot, || {});
                    sent += 1;
                }
                _ => loom::thread::yield_now(),
            }
        }
    }

    #[test]
    fn pin_handshake_prevents_overwrite() {
        model(|| {
            let c = Arc::new(VecCells::new(2, 1, 1));
            let data: Arc<Vec<UnsafeCell<u64>>> =
                Arc::new((0..2).map(|_| UnsafeCell::new(0)).collect());
            let mut rd = c.join(0, 0);
            // Message 0 is committed before the race starts; the writer then laps its slot.
            let mut w = Writer::adopt(&*c, 1);
            let Claim::Ready { pos, slot } = w.claim(&*c, false) else {
                panic!()
            };
            // SAFETY: no other thread exists yet.
            data[slot].with_mut(|p| unsafe { *p = 100 });
            w.commit(&*c, pos, slot, || {});
            let (c2, d2) = (c.clone(), data.clone());
            let writer = loom::thread::spawn(move || {
                for i in 1..3u64 {
                    if let Claim::Ready { pos, slot } = w.claim(&*c2, false) {
                        // SAFETY: loom checks that no reader accesses the cell concurrently.
                        d2[slot].with_mut(|p| unsafe { *p = i + 100 });
                        w.commit(&*c2, pos, slot, || {});
                    }
                }
            });
            if let Read::Message { slot, seq, .. } = rd.read(&*c, 0, 0) {
                // SAFETY: loom fails the model if the writer accesses the cell concurrently.
                let v = data[slot].with(|p| unsafe { *p });
                assert_eq!(v, seq + 100, "read a payload that is not the message's");
                Reader::release(&*c, 0, 0);
            }
            writer.join().unwrap();
        });
    }

    /// Under `block`, a reader that joins while the writer writes is never told of a loss: it
    /// starts where the writer will wait for it (invariant 4). Fails without the fence in
    /// `Reader::joined` (the writer's stale view of `active` and the reader's stale `tail`).
    #[test]
    fn a_reader_joining_during_block_writes_loses_nothing() {
        model(|| {
            let c = Arc::new(VecCells::new(2, 1, 1));
            let done = Arc::new(loom::sync::atomic::AtomicBool::new(false));
            let (c2, done2) = (c.clone(), done.clone());
            let writer = loom::thread::spawn(move || {
                send_blocking(&c2, 3);
                // Release: the reader's Acquire load then sees every commit.
                done2.store(true, Ordering::Release);
            });
            let mut rd = c.join(0, 1);
            let mut last = None;
            loop {
                // Acquire, before the read: if the writer was done, an empty read is the end.
                let finished = done.load(Ordering::Acquire);
                match rd.read(&*c, 0, 0) {
                    Read::Message { seq, missed, .. } => {
                        assert_eq!(missed, 0, "a joining reader was told of a loss");
                        assert!(last.is_none_or(|l| seq == l + 1), "a gap after {last:?}");
                        last = Some(seq);
                        Reader::release(&*c, 0, 0);
                    }
                    Read::Empty if finished => break,
                    Read::Empty => loom::thread::yield_now(),
                }
            }
            writer.join().unwrap();
        });
    }

    /// Under `block`, a reader never loses a message.
    #[test]
    fn block_loses_nothing() {
        model(|| {
            let c = Arc::new(VecCells::new(2, 1, 1));
            let mut rd = c.join(0, 0);
            let c2 = c.clone();
            let writer = loom::thread::spawn(move || send_blocking(&c2, 3));
            let mut expect = 0;
            while expect < 3 {
                match rd.read(&*c, 0, 0) {
                    Read::Message { seq, missed, .. } => {
                        assert_eq!((seq, missed), (expect, 0));
                        Reader::release(&*c, 0, 0);
                        expect += 1;
                    }
                    Read::Empty => loom::thread::yield_now(),
                }
            }
            writer.join().unwrap();
        });
    }
}
