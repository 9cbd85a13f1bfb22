//! The byte layout of a queue segment, every offset named, and the slot state word.
//!
//! ```text
//! 0      segment header (256 B, see shm::header)
//! 256    control block (768 B)
//!   +0    tail          u64  next position to reserve (moved under `append`)
//!   +8    append        u64  append lock: 0, or the holder's owner word
//!   +128  cursor        u64  next position to deliver for the first time (moved under `claim`)
//!   +136  claim         u64  claim lock: 0, or the holder's owner word
//!   +144  head          u64  every position below is acknowledged (moved under `claim`)
//!   +152  returned      u64  count of messages handed back (nack, drop, expiry): prompts scans
//!   +256  dead_lettered u64  messages moved to the dead-letter queue
//!   +264  dropped       u64  messages dropped: past max deliveries with no dead-letter queue
//!   +272  redelivered   u64  deliveries beyond a message's first
//!   +280  torn          u64  records found torn or corrupt (at recovery or delivery): dropped
//!   +288  recovered     u64  messages found waiting by the last recovery
//!   +296  recoveries    u64  recoveries run (durable queues, opened with nobody alive)
//!   +304  boot          u64  hash of the boot id the segment was last recovered under
//!   +384  room_waiters  u64  bitmap of producers (by entry) asleep on `room`
//!   +392  ready_waiters u64  bitmap of consumers (by entry) asleep on `ready`
//!   +400  room          u32  futex word producers sleep on (bumped by acks)
//!   +404  ready         u32  futex word consumers sleep on (bumped by producers)
//!         (a sleeper sets its own bit and clears it when it wakes; the bit of a participant
//!         that died asleep is cleared when its entry is reclaimed, so a crash never leaves
//!         wakers paying a futex wake per message)
//!         (both sides read the waiter counts at every message: their 128 bytes are written
//!         only by sleepers, apart from the lines producers and consumers write)
//!   +512  dlq_len       u64  length of the dead-letter queue's name (0: none)
//!   +520  dlq_name      200 bytes
//! 1024   producer table: P entries of 64 B
//!   +0    state   u64  0 free, 1 active
//!   +8    owner   u64  pid << 32 | low 32 bits of start time
//!   +16   writing u64  position + 1 of the slot it is filling (0: none)
//! ..     consumer table: C entries of 64 B (state, owner)
//! ..     slots, 64-aligned: N slots of `stride` bytes
//!   +0    state    u64  see below
//!   +8    deadline u64  visibility deadline, CLOCK_MONOTONIC milliseconds (under `claim`)
//!   +16   stale    u64  bitmap of consumers that lost this delivery to its deadline but may
//!                       still be reading it (in memory, the slot is not reused until they let go)
//!   +24   len      u64  payload length
//!   +32   payload  max_message_size bytes (in-memory queues; durable ones keep it in the log)
//! ```
//!
//! In-memory stride: `round_up(32 + max_message_size, 64)`; durable: 64.
//!
//! The state word: `position (40 bits) << 24 | count (12) << 12 | owner (8) << 4 | stale (1) << 3
//! | kind (3)`; kinds FREE, WRITING, READY, TAKEN (claimed), OPEN (handed to the application),
//! ACKED (acknowledged, stale readers left), SKIP (given up). The position names the lap, so a stale compare-and-swap from an earlier lap fails.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::OpenError;
use crate::log::LogShape;
use crate::shm::{Header, Region, TypeIdentity, HEADER_LEN};
use crate::topic::PayloadKind;

/// Segment kind of a queue.
pub const KIND_QUEUE: u32 = 3;
/// Version of this kind's byte layout (header word 8), raised on every change of it: a segment
/// of another version is refused with [`OpenError::VersionMismatch`].
pub(crate) const LAYOUT_VERSION: u32 = 2;

pub(crate) const CTRL_TAIL: usize = HEADER_LEN;
pub(crate) const CTRL_APPEND: usize = HEADER_LEN + 8;
pub(crate) const CTRL_ROOM_WAITERS: usize = HEADER_LEN + 384;
pub(crate) const CTRL_ROOM: usize = HEADER_LEN + 400;
pub(crate) const CTRL_CURSOR: usize = HEADER_LEN + 128;
pub(crate) const CTRL_CLAIM: usize = HEADER_LEN + 136;
pub(crate) const CTRL_HEAD: usize = HEADER_LEN + 144;
pub(crate) const CTRL_RETURNED: usize = HEADER_LEN + 152;
pub(crate) const CTRL_READY_WAITERS: usize = HEADER_LEN + 392;
pub(crate) const CTRL_READY: usize = HEADER_LEN + 404;
pub(crate) const CTRL_DEAD_LETTERED: usize = HEADER_LEN + 256;
pub(crate) const CTRL_DROPPED: usize = HEADER_LEN + 264;
pub(crate) const CTRL_REDELIVERED: usize = HEADER_LEN + 272;
pub(crate) const CTRL_TORN: usize = HEADER_LEN + 280;
pub(crate) const CTRL_RECOVERED: usize = HEADER_LEN + 288;
pub(crate) const CTRL_RECOVERIES: usize = HEADER_LEN + 296;
pub(crate) const CTRL_BOOT: usize = HEADER_LEN + 304;
pub(crate) const CTRL_DLQ_LEN: usize = HEADER_LEN + 512;
pub(crate) const CTRL_DLQ_NAME: usize = HEADER_LEN + 520;
const CTRL_LEN: usize = 768;
const PRODUCER_TABLE: usize = HEADER_LEN + CTRL_LEN;
const ENTRY_LEN: usize = 64;
pub(crate) const PRODUCER_WRITING: usize = 16;

/// Slot field offsets.
pub(crate) const SLOT_STATE: usize = 0;
pub(crate) const SLOT_DEADLINE: usize = 8;
pub(crate) const SLOT_STALE: usize = 16;
pub(crate) const SLOT_LEN: usize = 24;
/// Bytes of slot header before an in-memory payload.
pub const SLOT_HEADER: usize = 32;

/// Largest capacity (slots) of a queue.
pub const MAX_QUEUE_CAPACITY: usize = 1 << 24;
/// Largest message of a queue.
pub const MAX_QUEUE_MESSAGE: usize = 16 << 20;
/// Most producers, and most consumers, of one queue.
pub const MAX_QUEUE_PARTICIPANTS: usize = 64;
/// Most deliveries [`crate::QueueBuilder::max_deliveries`] may allow (the count field's range).
pub const MAX_DELIVERIES: u32 = 4000;
/// Longest dead-letter queue name.
pub(crate) const DLQ_NAME_CAP: usize = 200;

// State word kinds.
pub(crate) const FREE: u64 = 0;
pub(crate) const WRITING: u64 = 1;
pub(crate) const READY: u64 = 2;
pub(crate) const TAKEN: u64 = 3;
pub(crate) const ACKED: u64 = 4;
pub(crate) const SKIP: u64 = 5;
pub(crate) const OPEN: u64 = 6;
pub(crate) const STALE: u64 = 1 << 3;
const POS_BITS: u32 = 40;
const POS_MASK: u64 = (1 << POS_BITS) - 1;

/// A decoded slot state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct State(pub u64);

impl State {
    #[inline]
    pub(crate) fn new(kind: u64, pos: u64, owner: usize, count: u32) -> State {
        State(
            (pos & POS_MASK) << 24
                | (u64::from(count) & 0xfff) << 12
                | (owner as u64 & 0xff) << 4
                | kind,
        )
    }
    #[inline]
    pub(crate) fn kind(self) -> u64 {
        self.0 & 7
    }
    #[inline]
    pub(crate) fn stale(self) -> bool {
        self.0 & STALE != 0
    }
    #[inline]
    pub(crate) fn owner(self) -> usize {
        ((self.0 >> 4) & 0xff) as usize
    }
    #[inline]
    pub(crate) fn count(self) -> u32 {
        ((self.0 >> 12) & 0xfff) as u32
    }
    /// Whether the state is about position `pos` (its lap).
    #[inline]
    pub(crate) fn is_for(self, pos: u64) -> bool {
        self.0 >> 24 == pos & POS_MASK
    }
    /// Whether the state is about a position after `pos` (a later lap of the slot: position
    /// `pos` is done with, whatever happened since).
    #[inline]
    pub(crate) fn is_after(self, pos: u64) -> bool {
        let d = (self.0 >> 24).wrapping_sub(pos & POS_MASK) & POS_MASK;
        d != 0 && d < 1 << (POS_BITS - 1)
    }
    #[inline]
    pub(crate) fn with_kind(self, kind: u64) -> State {
        State(self.0 & !7 | kind)
    }
    /// Whether the state is a delivery (TAKEN, or OPEN: handed to the application).
    #[inline]
    pub(crate) fn is_delivered(self) -> bool {
        matches!(self.kind(), TAKEN | OPEN)
    }
    #[inline]
    pub(crate) fn with_stale(self, stale: bool) -> State {
        State(if stale {
            self.0 | STALE
        } else {
            self.0 & !STALE
        })
    }
}

/// Whether a segment is durable, and the payload kind, packed in one config word.
fn flags(durable: bool, kind: PayloadKind) -> u64 {
    u64::from(durable) | (kind as u64) << 8
}

/// The validated shape of a queue segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueLayout {
    pub capacity: usize,
    pub max_message_size: usize,
    pub producers: usize,
    pub consumers: usize,
    pub durable: bool,
    pub kind: PayloadKind,
    pub max_deliveries: u32,
    pub visibility_ms: u64,
    pub log_records: u64,
    pub stride: usize,
    pub consumer_table: usize,
    pub slots: usize,
    pub len: usize,
}

impl QueueLayout {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        capacity: usize,
        max_message_size: usize,
        producers: usize,
        consumers: usize,
        durable: bool,
        kind: PayloadKind,
        max_deliveries: u32,
        visibility_ms: u64,
        log_records: u64,
    ) -> Result<QueueLayout, OpenError> {
        let bad = |what: String| Err(OpenError::InvalidConfig(what));
        if !capacity.is_power_of_two() || !(2..=MAX_QUEUE_CAPACITY).contains(&capacity) {
            return bad(format!(
                "capacity {capacity} is not a power of two in 2..={MAX_QUEUE_CAPACITY}"
            ));
        }
        if !(1..=MAX_QUEUE_MESSAGE).contains(&max_message_size) {
            return bad(format!(
                "max message size {max_message_size} is not in 1..={MAX_QUEUE_MESSAGE}"
            ));
        }
        for (n, what) in [(producers, "producers"), (consumers, "consumers")] {
            if !(1..=MAX_QUEUE_PARTICIPANTS).contains(&n) {
                return bad(format!("{n} {what} is not in 1..={MAX_QUEUE_PARTICIPANTS}"));
            }
        }
        if max_deliveries > MAX_DELIVERIES {
            return bad(format!(
                "max deliveries {max_deliveries} exceeds {MAX_DELIVERIES}"
            ));
        }
        if visibility_ms == 0 || visibility_ms > 1 << 40 {
            return bad(format!("visibility timeout of {visibility_ms} ms"));
        }
        if durable && !(1..=1 << 24).contains(&log_records) {
            return bad(format!("{log_records} records per log segment"));
        }
        let stride = if durable {
            64
        } else {
            (SLOT_HEADER + max_message_size).next_multiple_of(64)
        };
        let consumer_table = PRODUCER_TABLE + producers * ENTRY_LEN;
        let slots = (consumer_table + consumers * ENTRY_LEN).next_multiple_of(128);
        let Some(len) = capacity
            .checked_mul(stride)
            .and_then(|b| b.checked_add(slots))
        else {
            return bad("queue segment size overflows".into());
        };
        Ok(QueueLayout {
            capacity,
            max_message_size,
            producers,
            consumers,
            durable,
            kind,
            max_deliveries,
            visibility_ms,
            log_records: if durable { log_records } else { 0 },
            stride,
            consumer_table,
            slots,
            len,
        })
    }

    pub(crate) fn from_header(h: &Header, region_len: usize) -> Result<QueueLayout, OpenError> {
        h.check_version(LAYOUT_VERSION)?;
        let c = &h.config;
        let small = |w: u64| usize::try_from(w).unwrap_or(usize::MAX);
        let kind = match c[5] >> 8 {
            0 => PayloadKind::Pod,
            1 => PayloadKind::Bytes,
            2 => PayloadKind::Rkyv,
            k => return Err(OpenError::Corrupt(format!("unknown payload kind {k}"))),
        };
        let l = QueueLayout::new(
            small(c[0]),
            small(c[2]),
            small(c[3]),
            small(c[4]),
            c[5] & 1 != 0,
            kind,
            u32::try_from(c[6]).unwrap_or(u32::MAX),
            c[7],
            c[8],
        )
        .map_err(|e| OpenError::Corrupt(format!("queue configuration: {e}")))?;
        if l.stride as u64 != c[1] || l.len != region_len || h.segment_len != region_len as u64 {
            return Err(OpenError::Corrupt(format!(
                "queue layout needs {} bytes (stride {}), segment has {region_len}",
                l.len, l.stride
            )));
        }
        Ok(l)
    }

    pub(crate) fn header(&self, ty: TypeIdentity) -> Header {
        Header {
            kind: KIND_QUEUE,
            version: LAYOUT_VERSION,
            segment_len: self.len as u64,
            ty,
            config: [
                self.capacity as u64,
                self.stride as u64,
                self.max_message_size as u64,
                self.producers as u64,
                self.consumers as u64,
                flags(self.durable, self.kind),
                u64::from(self.max_deliveries),
                self.visibility_ms,
                self.log_records,
            ],
        }
    }

    /// The shape of a durable queue's log: one record per position, of the ring's message
    /// size. Derived from the (validated) ring layout only, so the ring and the log never
    /// disagree on a record's size.
    pub(crate) fn log_shape(&self) -> LogShape {
        LogShape {
            max_payload: self.max_message_size,
            records: self.log_records,
        }
    }

    #[inline]
    pub(crate) fn producer_entry(&self, i: usize) -> usize {
        PRODUCER_TABLE + i * ENTRY_LEN
    }

    #[inline]
    pub(crate) fn consumer_entry(&self, i: usize) -> usize {
        self.consumer_table + i * ENTRY_LEN
    }

    /// Offset of the slot of position `pos`.
    #[inline]
    pub(crate) fn slot(&self, pos: u64) -> usize {
        self.slots + (pos as usize & (self.capacity - 1)) * self.stride
    }

    /// The slot state word of position `pos`.
    #[inline]
    pub(crate) fn state<'r>(&self, r: &'r Region, pos: u64) -> &'r AtomicU64 {
        r.u64_at(self.slot(pos) + SLOT_STATE)
    }

    /// Writes FREE(i) into every slot of a new segment, so position i's slot is free for lap 0.
    pub(crate) fn init_slots(&self, r: &Region) {
        for i in 0..self.capacity as u64 {
            // Relaxed: the segment is not published yet.
            self.state(r, i)
                .store(State::new(FREE, i, 0, 0).0, Ordering::Relaxed);
        }
    }
}
