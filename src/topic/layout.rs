//! The byte layout of a topic segment, every offset named.
//!
//! ```text
//! 0                    segment header (256 B, see shm::header)
//! 256                  control block (2 cache lines)
//!   +0   active        u64  bitmap of registered subscribers (ring::broadcast)
//!   +8   roster        u64  bumped on every subscriber join / leave / reclaim (ring::broadcast)
//!   +16  news sleepers u64  doorbell: subscribers asleep waiting for a message
//!   +24  news seq      u32  doorbell: its futex word
//!   +28  room seq      u32  doorbell: futex word of publishers blocked for room
//!   +32  room sleepers u64  doorbell: publishers asleep waiting for room
//!   +40  rings_used    u64  bitmap of rings a publisher ever joined (subscribers poll only these)
//! 384                  publisher table: P entries of 2 cache lines
//!   +0   state         u64  0 free, 1 active (shm::entry)
//!   +8   owner         u64  pid << 32 | low 32 bits of start time (shm::entry)
//!   +64  tail          u64  ring: next position (its own cache line)
//!   +72  msgs          u64  ring: messages committed
//! ..                   subscriber table: S entries of 1 cache line
//!   +0   state         u64  as above
//!   +8   owner         u64  as above
//! ..                   cursor matrix: S × P entries of 2 cache lines, subscriber-major
//!   +0   cursor        u64  next position of subscriber s in ring p
//!   +8   held[H]       u64  positions s reads in place from ring p (u64::MAX = none)
//! ..                   rings (2-line aligned): P rings of N slots of `stride` bytes
//!   +0   stamp         u64  position << 2 | state (ring::broadcast)
//!   +8   seq           u64  message number
//!   +16  len           u64  payload length in bytes
//!   +24  flags         u64  FLAG_RELAYED: sent by a network bridge for another host; bits
//!                           8..63: its publisher's running total of messages lost upstream
//!                           (LOST_SHIFT)
//!   +32  payload       max_message_size bytes, padded so stride is a multiple of 64
//! ```
//!
//! Total: `384 + 128·P + 64·S + 128·S·P` rounded up to 128, plus `P·N·stride` bytes, where
//! `stride = round_up(32 + max_message_size, 64)`.

use crate::error::OpenError;
use crate::ring::broadcast::{Cells, MAX_HELD, MAX_READERS, NONE};
use crate::shm::entry::{Table, Tables};
use crate::shm::{
    check_config, disjoint, one_line, Header, Region, TypeIdentity, CACHE_LINE, CONFIG_WORDS,
    HEADER_LEN, U32, U64,
};
use crate::sync::doorbell::Bells;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

/// Segment kind of a topic.
pub const KIND_TOPIC: u32 = 1;
/// Version of this kind's byte layout (header word 8), raised on every change of it: a segment
/// of another version is refused with [`OpenError::VersionMismatch`]. 3: the slot's flags word
/// ([`FLAG_RELAYED`]). 4: its loss count ([`LOST_SHIFT`]).
pub const LAYOUT_VERSION: u32 = 4;

/// Control block: right after the header.
pub const CTRL: usize = HEADER_LEN;
crate::shm::fields! { from CTRL;
    /// Bitmap of registered subscribers.
    pub CTRL_ACTIVE: U64,
    /// Bumped on every subscriber join, leave or reclaim.
    pub CTRL_ROSTER: U64,
    /// Doorbell of subscribers waiting for a message: sleeper bitmap.
    pub CTRL_NEWS_SLEEPERS: U64,
    /// Doorbell of subscribers waiting for a message: futex word.
    pub CTRL_NEWS_SEQ: U32,
    /// Doorbell of publishers blocked for room: futex word.
    pub CTRL_ROOM_SEQ: U32,
    /// Doorbell of publishers blocked for room: sleeper bitmap.
    pub CTRL_ROOM_SLEEPERS: U64,
    /// Bitmap of rings a publisher ever joined.
    pub CTRL_RINGS_USED: U64,
    CTRL_END,
}
/// Bytes of the control block.
pub const CTRL_LEN: usize = 2 * CACHE_LINE;
/// Publisher table.
pub const PUB_TABLE: usize = CTRL + CTRL_LEN;
/// Bytes of a publisher entry: the entry words, then the ring's tail on its own line.
pub const PUB_ENTRY: usize = 2 * CACHE_LINE;
crate::shm::fields! { from CACHE_LINE;
    /// A ring's next position (in its publisher's entry).
    pub PUB_TAIL: U64,
    /// A ring's count of committed messages.
    pub PUB_MSGS: U64,
}
/// Bytes of a subscriber entry.
pub const SUB_ENTRY: usize = CACHE_LINE;
/// Bytes of a cursor-matrix entry.
pub const CURSOR_ENTRY: usize = 2 * CACHE_LINE;
crate::shm::fields! { from 0;
    /// Offset of the cursor in a matrix entry.
    pub CURSOR_POS: U64,
    /// Offset of the first pin in a matrix entry.
    pub CURSOR_HELD: MAX_HELD * U64,
}

const _: () = {
    assert!(CTRL_END <= CTRL + CTRL_LEN);
    // Every control word a reader polls on its hot path sits on the first line.
    assert!(one_line(CTRL_ACTIVE, CTRL_RINGS_USED + U64 - CTRL_ACTIVE));
    assert!(disjoint(CTRL_NEWS_SEQ, U32, CTRL_ROOM_SEQ, U32));
    assert!(PUB_TABLE % CACHE_LINE == 0);
    // The tail is written on every send: away from the entry words others read.
    assert!(!one_line(crate::shm::entry::ENTRY_OWNER, PUB_TAIL));
    assert!(PUB_MSGS + U64 <= PUB_ENTRY);
    assert!(CURSOR_HELD + MAX_HELD * U64 <= CURSOR_ENTRY);
};

/// Bytes of slot header before the payload.
pub const SLOT_HEADER: usize = 4 * U64;
crate::shm::fields! { from 0;
    /// A slot's stamp word (`ring::broadcast`).
    pub SLOT_STAMP: U64,
    /// A slot's message number.
    pub SLOT_SEQ: U64,
    /// A slot's payload length.
    pub SLOT_LEN: U64,
    /// A slot's message flags ([`FLAG_RELAYED`]) and upstream loss count ([`LOST_SHIFT`]);
    /// other bits are ignored.
    pub SLOT_FLAGS: U64,
}
const _: () = assert!(SLOT_FLAGS + U64 <= SLOT_HEADER);
/// Message flag: the message was relayed from another host by a network bridge (the publisher
/// called [`crate::Publisher::set_relayed`]); bridges never forward such a message, so no
/// message goes round a loop of hosts.
pub const FLAG_RELAYED: u64 = 1;
/// The flags word above this bit is the publisher's running total (modulo 2^56) of messages
/// reported lost upstream (`Publisher::report_lost`: a network bridge's report of what the
/// exporting host lost). A subscriber adds the growth since the last message it read of that
/// publisher to its lag ([`crate::ReceiveError::Lagged`]), so the reports of messages it
/// missed count too.
pub const LOST_SHIFT: u32 = 8;
/// The mask of the running loss total.
pub const MAX_LOST: u64 = u64::MAX >> LOST_SHIFT;
/// Largest payload alignment a topic supports (the payload offset within a 64-aligned slot).
pub const MAX_ALIGN: usize = SLOT_HEADER;
/// Largest capacity (slots per ring).
pub const MAX_CAPACITY: usize = 1 << 20;
/// Most publishers, and most subscribers, a topic may have registered at once.
pub const MAX_PARTICIPANTS: usize = MAX_READERS;
/// Largest message size.
pub const MAX_MESSAGE_SIZE: usize = 1 << 30;

/// Slow-subscriber policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The publisher waits (up to its send timeout) for the slowest live subscriber: no message is
    /// lost.
    Block,
    /// The publisher never waits; a subscriber that falls a whole ring behind loses the oldest
    /// messages and is told how many ([`crate::ReceiveError::Lagged`]).
    DropOldest,
}

/// How payloads are encoded (stored in the segment header).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// A fixed-size `bytemuck::Pod` type.
    Pod = 0,
    /// Variable-length bytes.
    Bytes = 1,
    /// An rkyv archive.
    Rkyv = 2,
}

/// Shape of a topic, as stored in its header's configuration words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLayout {
    pub(crate) policy: Policy,
    pub(crate) capacity: usize,
    pub(crate) max_message_size: usize,
    pub(crate) max_publishers: usize,
    pub(crate) max_subscribers: usize,
    pub(crate) max_held: usize,
    pub(crate) history: usize,
    pub(crate) kind: PayloadKind,
    // Derived.
    pub(crate) stride: usize,
    subs_table: usize,
    matrix: usize,
    rings: usize,
    ring_len: usize,
    pub(crate) len: usize,
}

fn invalid(msg: String) -> OpenError {
    OpenError::InvalidConfig(msg)
}

impl TopicLayout {
    /// Validates the parameters and computes the offsets.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        policy: Policy,
        capacity: usize,
        max_message_size: usize,
        max_publishers: usize,
        max_subscribers: usize,
        max_held: usize,
        history: usize,
        kind: PayloadKind,
    ) -> Result<TopicLayout, OpenError> {
        check_config("capacity", capacity, 2..=MAX_CAPACITY, true)?;
        check_config(
            "max message size",
            max_message_size,
            1..=MAX_MESSAGE_SIZE,
            false,
        )?;
        check_config("max publishers", max_publishers, 1..=MAX_PARTICIPANTS, false)?;
        check_config("max subscribers", max_subscribers, 1..=MAX_PARTICIPANTS, false)?;
        check_config("max held", max_held, 1..=MAX_HELD, false)?;
        // A joining subscriber can be promised at most capacity - 2 messages (ring::broadcast,
        // invariant 4).
        if history.saturating_add(2) > capacity {
            return Err(invalid(format!(
                "history {history} must be at most capacity {capacity} - 2"
            )));
        }
        let stride = (SLOT_HEADER + max_message_size).div_ceil(CACHE_LINE) * CACHE_LINE;
        let subs_table = PUB_TABLE + PUB_ENTRY * max_publishers;
        let matrix = subs_table + SUB_ENTRY * max_subscribers;
        let rings = (matrix + CURSOR_ENTRY * max_subscribers * max_publishers)
            .div_ceil(2 * CACHE_LINE)
            * (2 * CACHE_LINE);
        let ring_len = capacity
            .checked_mul(stride)
            .ok_or_else(|| invalid("ring size overflows".into()))?;
        let len = ring_len
            .checked_mul(max_publishers)
            .and_then(|r| r.checked_add(rings))
            .filter(|l| *l <= isize::MAX as usize / 2)
            .ok_or_else(|| invalid("segment size overflows".into()))?;
        Ok(TopicLayout {
            policy,
            capacity,
            max_message_size,
            max_publishers,
            max_subscribers,
            max_held,
            history,
            kind,
            stride,
            subs_table,
            matrix,
            rings,
            ring_len,
            len,
        })
    }

    pub(crate) fn config_words(&self) -> [u64; CONFIG_WORDS] {
        let mut w = [0u64; CONFIG_WORDS];
        w[0] = match self.policy {
            Policy::Block => 0,
            Policy::DropOldest => 1,
        };
        w[1] = self.capacity as u64;
        w[2] = self.max_message_size as u64;
        w[3] = self.max_publishers as u64;
        w[4] = self.max_subscribers as u64;
        w[5] = self.max_held as u64;
        w[6] = self.history as u64;
        w[7] = self.kind as u64;
        w
    }

    /// Rebuilds a layout from an (untrusted) header and checks it against the segment length.
    pub(crate) fn from_header(h: &Header, region_len: usize) -> Result<TopicLayout, OpenError> {
        h.check_version(LAYOUT_VERSION)?;
        let c = &h.config;
        let corrupt = |e: OpenError| OpenError::Corrupt(format!("topic configuration: {e}"));
        let small = |w: u64| usize::try_from(w).unwrap_or(usize::MAX);
        let policy = match c[0] {
            0 => Policy::Block,
            1 => Policy::DropOldest,
            p => return Err(OpenError::Corrupt(format!("unknown policy {p}"))),
        };
        let kind = match c[7] {
            0 => PayloadKind::Pod,
            1 => PayloadKind::Bytes,
            2 => PayloadKind::Rkyv,
            k => return Err(OpenError::Corrupt(format!("unknown payload kind {k}"))),
        };
        let l = TopicLayout::new(
            policy,
            small(c[1]),
            small(c[2]),
            small(c[3]),
            small(c[4]),
            small(c[5]),
            small(c[6]),
            kind,
        )
        .map_err(corrupt)?;
        if l.len != region_len {
            return Err(OpenError::Corrupt(format!(
                "layout needs {} bytes, segment has {region_len}",
                l.len
            )));
        }
        Ok(l)
    }

    /// Header for a new segment carrying `ty`.
    pub(crate) fn header(&self, ty: TypeIdentity) -> Header {
        Header {
            kind: KIND_TOPIC,
            version: LAYOUT_VERSION,
            segment_len: self.len as u64,
            ty,
            config: self.config_words(),
        }
    }

    pub(crate) fn pub_entry(&self, p: usize) -> usize {
        self.table(Role::Publisher).entry(p)
    }

    fn cursor_entry(&self, s: usize, p: usize) -> usize {
        self.matrix + CURSOR_ENTRY * (s * self.max_publishers + p)
    }

    /// The atomic cells of ring `p` in `region`.
    pub(crate) fn cells<'a>(&'a self, region: &'a Region, p: usize) -> RingCells<'a> {
        RingCells {
            region,
            layout: self,
            ring: p,
            slot0: self.rings + self.ring_len * p,
            pub_entry: self.pub_entry(p),
        }
    }

    /// What publisher `i` leaves (its part of `Members::release`): its ring as it is (the next
    /// publisher of the entry continues its positions) and only its doorbell bit.
    fn release_publisher(&self, r: &Region, i: usize) {
        self.room_bell(r).forget(i);
    }

    /// What subscriber `i` leaves (its part of `Members::release`): pins, a cursor and its bits
    /// in the roster and the news doorbell; publishers blocked on it are woken to look again.
    fn release_subscriber(&self, r: &Region, i: usize) {
        // SeqCst: the leave half of the roster handshake (ring::broadcast); a writer waiting on
        // this subscriber is woken below and rereads the active bitmap.
        r.u64_at(CTRL_ACTIVE)
            .fetch_and(!(1u64 << i), Ordering::SeqCst);
        self.news_bell(r).forget(i);
        for p in 0..self.max_publishers {
            let c = self.cells(r, p);
            for h in 0..self.max_held {
                c.held(i, h).store(NONE, Ordering::SeqCst);
            }
        }
        r.u64_at(CTRL_ROSTER).fetch_add(1, Ordering::SeqCst);
        self.room_bell(r).wake(crate::sync::doorbell::ALL);
    }
}

crate::shm::entry::member_tables! {
    /// The two member tables of a topic.
    TopicLayout, |l| {
        /// The publisher table (one ring each).
        Publisher => Table::new(PUB_TABLE, PUB_ENTRY, l.max_publishers, "publisher"),
        /// The subscriber table.
        Subscriber => Table::new(l.subs_table, SUB_ENTRY, l.max_subscribers, "subscriber"),
    }
    release: Publisher => release_publisher, Subscriber => release_subscriber;
}

/// Subscribers sleep on news of a message, publishers blocked for room on room.
impl Bells for TopicLayout {
    const NEWS: (usize, usize) = (CTRL_NEWS_SEQ, CTRL_NEWS_SLEEPERS);
    const ROOM: (usize, usize) = (CTRL_ROOM_SEQ, CTRL_ROOM_SLEEPERS);
}

/// Ring `ring` of a topic segment, as [`Cells`].
pub(crate) struct RingCells<'a> {
    pub(crate) region: &'a Region,
    layout: &'a TopicLayout,
    ring: usize,
    slot0: usize,
    pub_entry: usize,
}

impl RingCells<'_> {
    /// Offset of the payload of `slot`.
    #[inline]
    pub(crate) fn payload(&self, slot: usize) -> usize {
        self.slot0 + self.layout.stride * slot + SLOT_HEADER
    }

    /// The length word of `slot`.
    #[inline]
    pub(crate) fn len_word(&self, slot: usize) -> &AtomicU64 {
        self.region
            .u64_at(self.slot0 + self.layout.stride * slot + SLOT_LEN)
    }

    /// The flags word of `slot`.
    #[inline]
    pub(crate) fn flags_word(&self, slot: usize) -> &AtomicU64 {
        self.region
            .u64_at(self.slot0 + self.layout.stride * slot + SLOT_FLAGS)
    }
}

impl Cells for RingCells<'_> {
    #[inline]
    fn mask(&self) -> u64 {
        self.layout.capacity as u64 - 1
    }
    #[inline]
    fn stamp(&self, slot: usize) -> &AtomicU64 {
        self.region
            .u64_at(self.slot0 + self.layout.stride * slot + SLOT_STAMP)
    }
    #[inline]
    fn seq(&self, slot: usize) -> &AtomicU64 {
        self.region
            .u64_at(self.slot0 + self.layout.stride * slot + SLOT_SEQ)
    }
    #[inline]
    fn tail(&self) -> &AtomicU64 {
        self.region.u64_at(self.pub_entry + PUB_TAIL)
    }
    #[inline]
    fn msgs(&self) -> &AtomicU64 {
        self.region.u64_at(self.pub_entry + PUB_MSGS)
    }
    #[inline]
    fn active(&self) -> &AtomicU64 {
        self.region.u64_at(CTRL_ACTIVE)
    }
    #[inline]
    fn roster(&self) -> &AtomicU64 {
        self.region.u64_at(CTRL_ROSTER)
    }
    #[inline]
    fn cursor(&self, r: usize) -> &AtomicU64 {
        self.region
            .u64_at(self.layout.cursor_entry(r, self.ring) + CURSOR_POS)
    }
    #[inline]
    fn held(&self, r: usize, h: usize) -> &AtomicU64 {
        debug_assert!(h < self.layout.max_held);
        self.region
            .u64_at(self.layout.cursor_entry(r, self.ring) + CURSOR_HELD + 8 * h)
    }
    #[inline]
    fn max_held(&self) -> usize {
        self.layout.max_held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_matches_layout() {
        let l = TopicLayout::new(Policy::Block, 64, 100, 4, 8, 2, 0, PayloadKind::Bytes).unwrap();
        assert_eq!(l.stride, 192);
        // Spelled out once here, as the module doc states it.
        let rings = (384 + 128 * 4 + 64 * 8 + 128 * 8 * 4usize).div_ceil(128) * 128;
        assert_eq!(l.len, rings + 4 * 64 * 192);
    }

    #[test]
    fn rejects_bad_parameters() {
        let k = PayloadKind::Bytes;
        assert!(TopicLayout::new(Policy::Block, 3, 8, 1, 1, 1, 0, k).is_err());
        assert!(TopicLayout::new(Policy::Block, 8, 0, 1, 1, 1, 0, k).is_err());
        assert!(TopicLayout::new(Policy::Block, 8, 8, 0, 1, 1, 0, k).is_err());
        assert!(TopicLayout::new(Policy::Block, 8, 8, 1, 65, 1, 0, k).is_err());
        assert!(TopicLayout::new(Policy::Block, 8, 8, 1, 1, 1, 8, k).is_err());
        assert!(TopicLayout::new(Policy::Block, 8, usize::MAX, 1, 1, 1, 0, k).is_err());
    }
}
